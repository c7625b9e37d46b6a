"""Telemetry across machines: workers started with `--monitor URL` send their events to `assistant telemetry serve`.

    worker (any session) --POST /events, Bearer TELEMETRY_PASS--> server (bounded ring of events)
    dashboard or curl    --GET /events?since=SEQ--------------->  server

Records are the audit log's (`{"kind", "data"}` from logs.audit.event_record) plus who sent them (`worker`,
`session`), when (`ts`) and the server's own sequence number (`seq`), so a reader asks for what came after the
last one it saw. The server keeps at most --max-events of them (oldest dropped first) and refuses bodies over
--max-body-kb before reading them; the kept events are bounded in count and in bytes (--max-mb), and a client
that goes silent mid-request is cut off after CLIENT_TIMEOUT. TELEMETRY_PASS (environment only: a flag would show in `ps`) is required on
any address that is not loopback; a wrong one is answered 401 and logged with the caller's address.

A worker never waits on the server: events go to a bounded queue that a thread sends in batches; when the server
is down or refuses, the worker says so once and drops what it cannot send.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from assistant.errors import AssistantError
from assistant.hookspecs import hookimpl

log = logging.getLogger("assistant")

PASS_ENV = "TELEMETRY_PASS"
DEFAULT_PORT = 7779
MAX_EVENTS = 10_000
MAX_BYTES = 64 << 20  # what the kept events may take in all (their JSON): the ring is bounded in bytes too
MAX_BODY = 1 << 20  # bytes of one POST
MAX_WORKERS = 1_000  # workers remembered; the longest silent is forgotten first
CLIENT_TIMEOUT = 10.0  # seconds a connection may sit silent (a body declared and never sent)
BATCH = 200  # events per POST from a worker
QUEUE = 5_000  # events a worker holds while the server is slow


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- the server ---------------------------------------------------------------------------------------------


class Store:
    """The newest records, at most `capacity` of them and `max_bytes` of their JSON, each numbered; per-worker
    counts survive the ring's turnover (for the MAX_WORKERS heard from most recently)."""

    def __init__(self, capacity: int = MAX_EVENTS, max_bytes: int = MAX_BYTES):
        self.records: deque[dict] = deque()
        self.sizes: deque[int] = deque()
        self.capacity, self.max_bytes, self.bytes = capacity, max_bytes, 0
        self.seq = 0
        self.workers: dict[str, dict] = {}
        self.lock = threading.Lock()

    def add(self, worker: str, records: list[dict]) -> int:
        sized = [({**r, "worker": worker}, len(json.dumps(r, default=repr))) for r in records]
        with self.lock:
            seen = self.workers.pop(worker, None) or {"events": 0, "first_seen": time.time()}
            self.workers[worker] = seen  # the most recently heard last
            while len(self.workers) > MAX_WORKERS:
                del self.workers[next(iter(self.workers))]
            for record, size in sized:
                self.seq += 1
                record["seq"] = self.seq
                self.records.append(record)
                self.sizes.append(size)
                self.bytes += size
            while self.records and (len(self.records) > self.capacity or self.bytes > self.max_bytes):
                self.records.popleft()
                self.bytes -= self.sizes.popleft()
            seen["events"] += len(records)
            seen["last_seen"] = time.time()
            return self.seq

    def since(self, seq: int, limit: int) -> list[dict]:
        with self.lock:
            return [r for r in self.records if r["seq"] > seq][:limit]


class TelemetryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, password: str | None, *, max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES, max_body: int = MAX_BODY, out=sys.stderr):
        if not password and not is_loopback(host):
            raise AssistantError(f"refusing to listen on {host} without {PASS_ENV}: set it (the workers send "
                                 "it too), or listen on 127.0.0.1")
        self.password, self.max_body, self.out = password, max_body, out
        self.store = Store(max_events, max_bytes)
        self.refused = 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def note(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.out, flush=True)


class Handler(BaseHTTPRequestHandler):
    server: TelemetryServer
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT  # a silent client frees its thread

    def log_message(self, format, *args):  # the server notes what matters itself
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        password = self.server.password
        if not password:
            return True
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else ""
        if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), password.encode("utf-8")):
            return True
        self.server.refused += 1
        self.server.note(f"401 {self.command} {self.path} from {self.client_address[0]}: "
                         f"{'wrong' if token else 'no'} password")
        self._send(401, {"error": f"wrong or missing password ({PASS_ENV})"})
        return False

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, {"ok": True})
        if url.path != "/events":
            return self._send(404, {"error": "not found: GET /events?since=SEQ, POST /events, GET /health"})
        if not self._authorised():
            return
        query = parse_qs(url.query)
        try:
            since = int(query.get("since", ["0"])[0])
            limit = max(1, min(int(query.get("limit", ["1000"])[0]), 10_000))
        except ValueError:
            return self._send(400, {"error": "since and limit are integers"})
        store = self.server.store
        records = store.since(since, limit)
        with store.lock:
            workers = {name: dict(info) for name, info in store.workers.items()}
        self._send(200, {"seq": store.seq, "records": records, "workers": workers})

    def do_POST(self):
        if urlsplit(self.path).path != "/events":
            return self._send(404, {"error": "not found: POST /events"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(411, {"error": "a Content-Length is required"})
        if length < 0 or length > self.server.max_body:
            # Refused before reading: a body this size is never held in memory.
            self.server.note(f"413 from {self.client_address[0]}: {length} bytes (limit {self.server.max_body})")
            return self._send(413, {"error": f"the body is over {self.server.max_body} bytes"})
        if not self._authorised():
            return
        try:
            body = json.loads(self.rfile.read(length))
            worker = str(body["worker"])[:200]
            records = body["records"]
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            return self._send(400, {"error": 'expected {"worker": NAME, "records": [{...}, ...]}'})
        seq = self.server.store.add(worker, records)
        self._send(200, {"seq": seq, "accepted": len(records)})


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, max_events: int = MAX_EVENTS,
          max_bytes: int = MAX_BYTES, max_body: int = MAX_BODY, out=sys.stderr) -> int:
    """`assistant telemetry serve`: run until Ctrl-C."""
    password = os.environ.get(PASS_ENV) or None
    try:
        server = TelemetryServer(host, port, password, max_events=max_events, max_bytes=max_bytes,
                                 max_body=max_body, out=out)
    except OSError as exc:
        raise AssistantError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    guard = "password required" if password else "no password: loopback only"
    server.note(f"telemetry: listening on {server.url} ({guard}); workers: assistant --monitor {server.url} ...; "
                f"keeping the newest {max_events} events, {max_bytes >> 20} MB at most")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    server.note(f"stopped: {server.store.seq} events received from {len(server.store.workers)} workers, "
                f"{server.refused} requests refused")
    return 0


# --- the worker side ----------------------------------------------------------------------------------------


class Monitor:
    """A plugin that sends every event of a session to a telemetry server, from a background thread."""

    def __init__(self, url: str, session: str, *, password: str | None = None, worker: str | None = None,
                 timeout: float = 5.0):
        import httpx

        self.url = url.rstrip("/") + "/events"
        self.session = session
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        headers = {"Authorization": f"Bearer {password}"} if password else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE)
        self.dropped = 0
        self.sent = 0
        self.failed = False  # said once; said again when it works after failing
        self.thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self.thread.start()

    @hookimpl
    def on_event(self, event):
        from assistant.logs.audit import event_record

        recorded = event_record(event)
        if recorded is None:
            return
        kind, data = recorded
        try:
            self.queue.put_nowait({"ts": time.time(), "session": self.session, "kind": kind, "data": data})
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = [self.queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self.queue.get(timeout=0.2))
                except queue.Empty:
                    break
            stop = any(r is None for r in batch)
            self._send([r for r in batch if r is not None])

    def _send(self, records: list[dict]) -> None:
        if not records:
            return
        try:
            body = json.dumps({"worker": self.worker, "records": records}, default=repr).encode("utf-8",
                                                                                               "surrogatepass")
            reply = self.client.post(self.url, content=body, headers={"Content-Type": "application/json"})
            if reply.status_code != 200:
                raise AssistantError(f"HTTP {reply.status_code}: {reply.text[:200]}")
        except Exception as exc:  # never the agent's problem: say it once, drop the batch
            self.dropped += len(records)
            if not self.failed:
                self.failed = True
                log.warning(f"telemetry: cannot send to {self.url} ({exc}); events are dropped until it works")
            return
        self.sent += len(records)
        if self.failed:
            self.failed = False
            log.warning(f"telemetry: sending to {self.url} again")

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued (waiting at most `timeout` seconds), then stop."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.thread.join(timeout)
        self.client.close()


def monitor_for(settings, session: str) -> Monitor | None:
    if not settings.monitor:
        return None
    url = urlsplit(settings.monitor)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise AssistantError(f"--monitor needs an http(s) URL such as http://127.0.0.1:{DEFAULT_PORT}, "
                             f"not {settings.monitor!r}")
    return Monitor(settings.monitor, session, password=os.environ.get(PASS_ENV) or None)
