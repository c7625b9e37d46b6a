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
from assistant.text import escape_control

log = logging.getLogger("assistant")

PASS_ENV = "TELEMETRY_PASS"
DEFAULT_PORT = 7779
MAX_EVENTS = 10_000
MAX_BYTES = 64 << 20  # what the kept events may take in all (their JSON): the ring is bounded in bytes too
MAX_BODY = 1 << 20  # bytes of one POST
MAX_WORKERS = 1_000  # workers remembered; the longest silent is forgotten first
CLIENT_TIMEOUT = 10.0  # seconds a connection may sit silent (a body declared and never sent)
MAX_CONNECTIONS = 64  # handled at once; more are closed at once (a trickle of slow clients cannot take them all)
MAX_RECORDS_PER_POST = 1_000
BATCH = 200  # events per POST from a worker
BATCH_BYTES = 512 << 10  # and bytes: under the server's default body limit
QUEUE = 5_000  # events a worker holds while the server is slow


def check_password(password: str | None) -> None:
    """A password must travel in an HTTP header as it is: printable ASCII, no spaces at its ends."""
    if password is not None and (not password.isascii() or not password.isprintable()
                                 or password != password.strip()):
        raise AssistantError(f"{PASS_ENV} must be printable ASCII without spaces at its ends")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# --- the server ---------------------------------------------------------------------------------------------


class Store:
    """The newest records, at most `capacity` of them and `max_bytes` in all, each numbered; per-worker counts
    survive the ring's turnover (for the MAX_WORKERS heard from most recently). A record is kept as its encoded
    JSON: the byte bound is what it costs, and a reply is joined from the bytes."""

    def __init__(self, capacity: int = MAX_EVENTS, max_bytes: int = MAX_BYTES):
        self.records: deque[tuple[int, bytes]] = deque()  # (seq, JSON)
        self.capacity, self.max_bytes, self.bytes = capacity, max_bytes, 0
        self.seq = 0
        self.workers: dict[str, dict] = {}
        self.lock = threading.Lock()

    def add(self, worker: str, records: list[dict]) -> int:
        encoded = [json.dumps({**r, "worker": worker}, default=repr).encode("utf-8", "surrogatepass")[:-1]
                   for r in records]  # each ends in "}": the seq goes in front of it below
        with self.lock:
            seen = self.workers.pop(worker, None) or {"events": 0, "first_seen": time.time()}
            self.workers[worker] = seen  # the most recently heard last
            while len(self.workers) > MAX_WORKERS:
                del self.workers[next(iter(self.workers))]
            for data in encoded:
                self.seq += 1
                data += b', "seq": %d}' % self.seq
                self.records.append((self.seq, data))
                self.bytes += len(data)
            while self.records and (len(self.records) > self.capacity or self.bytes > self.max_bytes):
                self.bytes -= len(self.records.popleft()[1])
            seen["events"] += len(records)
            seen["last_seen"] = time.time()
            return self.seq

    def since(self, seq: int, limit: int) -> tuple[list[bytes], int, int, dict]:
        """(the records after seq, at most limit, as JSON; the seq to ask from next; the newest seq, which is
        below `seq` after a restart; the workers), all read at one moment."""
        with self.lock:
            found = [(n, data) for n, data in self.records if n > seq][:limit]
            following = found[-1][0] if found else seq
            return [d for _, d in found], following, self.seq, {k: dict(v) for k, v in self.workers.items()}


def bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class TelemetryServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, password: str | None, *, max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES, max_body: int = MAX_BODY, out=sys.stderr):
        host = bare(host)
        if not password and not is_loopback(host):
            raise AssistantError(f"refusing to listen on {host} without {PASS_ENV}: set it (the workers send "
                                 "it too), or listen on 127.0.0.1")
        check_password(password)
        self.password, self.max_body, self.out = password, max_body, out
        self.store = Store(max_events, max_bytes)
        self.refused = 0
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):  # full: this one is closed, the others keep their threads
            self.shutdown_request(request)
            self.refuse_note(f"connection from {client_address[0]} closed: {MAX_CONNECTIONS} already open")
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()  # what a worker on another machine can reach (the bind address is not)
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def note(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {escape_control(text)}", file=self.out, flush=True)

    def refuse_note(self, text: str) -> None:
        """Refusals are noted, but a flood of them is not: the first 20, then every 1,000th."""
        self.refused += 1
        if self.refused <= 20 or self.refused % 1000 == 0:
            self.note(f"{text} (refusal {self.refused})")


class Handler(BaseHTTPRequestHandler):
    server: TelemetryServer
    protocol_version = "HTTP/1.1"
    timeout = CLIENT_TIMEOUT  # a silent client frees its thread

    def log_message(self, format, *args):  # the server notes what matters itself
        pass

    def _send(self, code: int, body: dict | bytes) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, code: int, why: str, error: str) -> None:
        self.server.refuse_note(f"{code} {self.command} {self.path[:80]} from {self.client_address[0]}: {why}")
        self._send(code, {"error": error})

    def _authorised(self) -> bool:
        password = self.server.password
        if not password:
            # No password means loopback only. A web page the user visits can still reach 127.0.0.1, through
            # a name it rebinds: only a loopback Host is answered.
            given = self.headers.get("Host") or ""
            host = given[1:given.index("]")] if given.startswith("[") and "]" in given else given.rsplit(":", 1)[0]
            if not is_loopback(host):
                self._refuse(403, f"Host {host[:80]!r}", "without a password, only loopback hosts are answered")
                return False
            return True
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else ""
        if hmac.compare_digest(token.encode("latin-1", "replace"), password.encode("ascii")):
            return True
        self._refuse(401, f"{'wrong' if token else 'no'} password", f"wrong or missing password ({PASS_ENV})")
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
        records, following, newest, workers = self.server.store.since(since, limit)
        self._send(200, b'{"next": %d, "seq": %d, "records": [%s], "workers": %s}' % (
            following, newest, b", ".join(records), json.dumps(workers).encode("utf-8")))

    def do_POST(self):
        if urlsplit(self.path).path != "/events":
            return self._send(404, {"error": "not found: POST /events"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(411, {"error": "a Content-Length is required"})
        if length < 0 or length > self.server.max_body:
            # Refused before reading: a body this size is never held in memory.
            return self._refuse(413, f"{length} bytes (limit {self.server.max_body})",
                                f"the body is over {self.server.max_body} bytes")
        if not self._authorised():
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            # (a browser's cross-site form or text/plain POST cannot send this without asking first)
            return self._send(415, {"error": "Content-Type must be application/json"})
        try:
            body = json.loads(self.rfile.read(length))
            worker = str(body["worker"])[:200]
            records = body["records"]
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            return self._send(400, {"error": 'expected {"worker": NAME, "records": [{...}, ...]}'})
        if len(records) > MAX_RECORDS_PER_POST:
            return self._send(413, {"error": f"at most {MAX_RECORDS_PER_POST} records in one POST"})
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
        self.stopping = threading.Event()
        self.dropped = 0
        self.sent = 0
        self.failed = False  # said once; said again when it works after failing
        self.thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self.thread.start()

    @hookimpl
    def on_event(self, event):
        from assistant.logs.audit import event_record

        recorded = event_record(event)
        if recorded is None or self.stopping.is_set():
            return
        kind, data = recorded
        try:
            self.queue.put_nowait({"ts": time.time(), "session": self.session, "kind": kind, "data": data})
        except queue.Full:
            self.dropped += 1

    def _encoded(self, record: dict) -> bytes:
        data = json.dumps(record, default=repr).encode("utf-8", "surrogatepass")
        if len(data) > BATCH_BYTES:  # one huge event (a file's contents): its size goes, not the event
            data = json.dumps({**record, "data": {"truncated": True, "bytes": len(data)}}).encode("utf-8")
        return data

    def _run(self) -> None:
        try:
            pending: list[bytes] = []
            while not (self.stopping.is_set() and self.queue.empty()):
                try:
                    pending.append(self._encoded(self.queue.get(timeout=0.2)))
                except queue.Empty:
                    pass
                size = sum(map(len, pending))
                if pending and (self.queue.empty() or len(pending) >= BATCH or size >= BATCH_BYTES):
                    # A body stays under the server's limit: split where the next record would pass it.
                    while pending:
                        cut, total = 0, 0
                        while cut < len(pending) and (cut == 0 or total + len(pending[cut]) < BATCH_BYTES):
                            total += len(pending[cut])
                            cut += 1
                        self._send(pending[:cut])
                        pending = pending[cut:]
        finally:
            self.client.close()  # here, not in close(): a send may still be using it

    def _send(self, records: list[bytes]) -> None:
        if self.failed and self.stopping.is_set():  # the server was not taking them: do not wait on it again
            self.dropped += len(records)
            return
        body = b'{"worker": %s, "records": [%s]}' % (json.dumps(self.worker).encode(), b", ".join(records))
        try:
            reply = self.client.post(self.url, content=body, headers={"Content-Type": "application/json"})
            if reply.status_code != 200:
                raise AssistantError(f"HTTP {reply.status_code}")
        except Exception as exc:  # never the agent's problem: say it once, drop the batch
            self.dropped += len(records)
            if not self.failed:
                self.failed = True
                log.warning(f"telemetry: cannot send to {self.url} ({type(exc).__name__}"
                            f"{': HTTP ' + str(exc)[5:] if isinstance(exc, AssistantError) else ''}); "
                            "events are dropped until it works")
            return
        self.sent += len(records)
        if self.failed:
            self.failed = False
            log.warning(f"telemetry: sending to {self.url} again")

    def close(self, timeout: float = 3.0) -> None:
        """Send what is queued, waiting at most `timeout` seconds (not at all when the server was failing)."""
        self.stopping.set()
        self.thread.join(0 if self.failed else timeout)


def monitor_for(settings, session: str) -> Monitor | None:
    if not settings.monitor:
        return None
    check_monitor(settings)
    return Monitor(settings.monitor, session, password=os.environ.get(PASS_ENV) or None)


def check_monitor(settings) -> None:
    """A clear error for a --monitor URL or a TELEMETRY_PASS that cannot work."""
    try:
        url = urlsplit(settings.monitor)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and (url.port or 1) > 0
    except ValueError:
        ok = False
    if not ok:
        raise AssistantError(f"--monitor needs an http(s) URL such as http://127.0.0.1:{DEFAULT_PORT}, "
                             f"not {settings.monitor!r}")
    check_password(os.environ.get(PASS_ENV) or None)
