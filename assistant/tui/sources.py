"""Where the dashboard's records come from: the audit logs on this machine (followed as they are written), or a
telemetry server (`assistant telemetry serve`, polled); and the run folders (benchmarks, training) under the
home. Each `poll()` does blocking I/O and is called from a worker thread, never from the app's event loop."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import AssistantError
from assistant.tui.board import Bench, TrainRun

RECENT_FILES = 50  # logs read at start (the newest by change time); later ones are followed as they appear
TAIL_BYTES = 1 << 20  # of a log read at start: its newest records
READ_CHUNK = 8 << 20  # read per file per poll, so one huge file cannot stall the others


class SourceError(AssistantError):
    pass


@dataclass
class Polled:
    records: list[dict] = field(default_factory=list)
    streams: list[tuple[tuple[str, str], str, bool]] = field(default_factory=list)  # (session key, text, ended)
    workers: dict | None = None
    note: str = ""  # something to say in the status line (bad lines, a server that went away)
    more: bool = False  # a slice of a bigger read: more follows at once


class _Tail:
    """A file read up to `offset`, which is always just after a newline: an unfinished last line is read again
    next time rather than kept, so a log cut back to its last whole line (audit.py does so after a crash) and
    then appended to reads right. A file replaced, or cut below the offset, is read again from its start (the
    board drops records it already has)."""

    def __init__(self):
        self.offset = 0
        self.inode = 0
        self.skipping = False  # inside a line longer than READ_CHUNK: dropped up to its end
        self.error = ""

    def at_end(self, path: Path) -> "_Tail":
        """Only what is appended from now on."""
        try:
            st = path.stat()
            self.inode, self.offset = st.st_ino, st.st_size
        except OSError:
            pass
        return self

    def read(self, path: Path, *, start_tail: int | None = None) -> list[bytes]:
        """The complete lines appended since the last read; [] when none, or when the file is gone or is not a
        regular file (`error` says why)."""
        self.error = ""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO in its place must not hang the reader
        except OSError:
            return []
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.error = f"{path.name} is not a regular file"
                return []
            if st.st_ino != self.inode or st.st_size < self.offset:
                self.inode, self.offset, self.skipping = st.st_ino, 0, False
                if start_tail is not None and st.st_size > start_tail:
                    self.offset = st.st_size - start_tail
                    # Unless the tail starts just after a newline, its first line is a piece of one.
                    self.skipping = os.pread(fd, 1, self.offset - 1) != b"\n"
            if st.st_size <= self.offset:
                return []
            data = os.pread(fd, min(st.st_size - self.offset, READ_CHUNK), self.offset)
        except OSError as exc:
            self.error = f"cannot read {path.name}: {exc.strerror}"
            return []
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= READ_CHUNK:  # one line longer than a whole chunk: not worth holding
                self.offset += len(data)
                self.skipping = True
            return []
        self.offset += end + 1
        lines = data[:end].split(b"\n")
        if self.skipping:
            lines, self.skipping = lines[1:], False
        return [line for line in lines if line.strip()]


class LogFollower:
    """Follows the audit logs of a folder (default <home>/logs), or one log file: new records and new files as
    they appear, a line only once it is complete. `<session>.live` beside a log carries a session's streamed
    reply (logs/live.py)."""

    def __init__(self, target: str | os.PathLike, *, recent: int = RECENT_FILES, tail_bytes: int = TAIL_BYTES):
        self.target = Path(target).expanduser()
        if not self.target.exists():
            raise SourceError(f"{self.target} does not exist (the audit logs are in <home>/logs; pass --logs)")
        self.folder = self.target.parent if self.target.is_file() else self.target
        self.recent, self.tail_bytes = recent, tail_bytes
        self.logs: dict[Path, _Tail] = {}
        self.lives: dict[str, _Tail] = {}  # by session id
        self.known: set[str] = set()  # sessions seen and not ended: their .live file may appear at any time
        self.started = False
        self.bad_lines = 0

    @property
    def description(self) -> str:
        return f"following {self.target}"

    def _files(self) -> list[Path]:
        if self.target.is_file():
            return [self.target]
        try:
            found = [p for p in self.target.iterdir() if p.suffix == ".jsonl"]
        except OSError as exc:
            raise SourceError(f"cannot list {self.target}: {exc.strerror}") from None
        for gone in set(self.logs) - set(found):
            del self.logs[gone]
        if not self.started:  # the newest logs are read; the others only from where they end now
            newest = set(sorted(found, key=_mtime)[-self.recent:])
            for path in found:
                if path not in newest:
                    self.logs[path] = _Tail().at_end(path)
        return found

    def poll(self) -> Polled:
        out = Polled()
        first = not self.started
        problems = []
        ended: set[str] = set()
        for path in self._files():
            tail = self.logs.get(path)
            if tail is None:
                tail = self.logs[path] = _Tail()
            for line in tail.read(path, start_tail=self.tail_bytes if first else None):
                try:
                    record = json.loads(line)
                except ValueError:
                    self.bad_lines += 1
                    continue
                if isinstance(record, dict):
                    out.records.append(record)
                    session = record.get("session")
                    if isinstance(session, str) and session:
                        if record.get("kind") == "session_end":
                            ended.add(session)
                        else:
                            self.known.add(session)
            if tail.error:
                problems.append(tail.error)
        self.started = True
        for session in sorted(self.known):
            self._stream(session, out, first)
        self.known -= ended
        for session in ended:  # what it streamed last is over; its file is gone with it
            self.lives.pop(session, None)
        out.records.sort(key=lambda r: r.get("ts") if isinstance(r.get("ts"), (int, float)) else 0)
        if self.bad_lines:
            problems.append(f"{self.bad_lines} lines that are not JSON skipped")
        out.note = "; ".join(problems)
        return out

    def _stream(self, session: str, out: Polled, first: bool) -> None:
        if "/" in session or session.startswith("."):
            return
        live = self.folder / f"{session}.live"
        state = self.lives.get(session)
        if state is None:
            if not live.exists():
                return
            state = self.lives[session] = _Tail()
        text: list[str] = []
        key = ("", session)
        for line in state.read(live, start_tail=64 << 10 if first else None):
            try:
                piece = json.loads(line)
            except ValueError:
                continue
            if not isinstance(piece, dict):
                continue
            if piece.get("end"):
                out.streams.append((key, "".join(text), True))
                text = []
            elif isinstance(piece.get("t"), str):
                text.append(piece["t"])
        if text:
            out.streams.append((key, "".join(text), False))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class RemoteFeed:
    """Polls a telemetry server's GET /events?since=N. TELEMETRY_PASS, when set, is sent as the bearer token."""

    def __init__(self, url: str, password: str | None = None, *, timeout: float = 3.0):
        import httpx

        from assistant.telemetry import PASS_ENV, check_password

        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise SourceError(f"--source must be an http:// or https:// URL, not {url!r}")
        password = password if password is not None else os.environ.get(PASS_ENV) or None
        if password:
            check_password(password)
        self.url = url
        headers = {"Authorization": f"Bearer {password}"} if password else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.since = 0

    @property
    def description(self) -> str:
        return f"polling {self.url}"

    def poll(self) -> Polled:
        import httpx

        try:
            reply = self.client.get(self.url + "/events", params={"since": self.since, "limit": 2000})
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {self.url}: {exc}") from None
        if reply.status_code == 401:
            raise SourceError(f"{self.url} refused the password (set TELEMETRY_PASS to the server's)")
        if reply.status_code != 200:
            raise SourceError(f"{self.url} answered {reply.status_code}")
        try:
            body = reply.json()
            records, following, newest = body["records"], int(body["next"]), int(body["seq"])
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"{self.url} did not answer as a telemetry server does") from None
        note = ""
        if newest < self.since:  # the server restarted: its numbers began again
            self.since, note = 0, "the server restarted; reading from its start"
        else:
            self.since = following
        return Polled([r for r in records if isinstance(r, dict)], workers=body.get("workers"), note=note)

    def close(self) -> None:
        self.client.close()


# --- run folders: benchmarks and training -----------------------------------------------------------------

def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _newest(paths) -> list[Path]:
    return sorted(paths, key=_mtime)


def read_runs(root: Path) -> tuple[list[Bench], list[TrainRun]]:
    """The newest figures of each benchmark under <home>/runs, with their history, and the training runs.
    Unreadable or half-written files are skipped: the next poll sees them whole."""
    benches: list[Bench] = []
    humaneval: dict[str, list[tuple[float, dict]]] = {}
    for path in _newest(root.glob("humaneval/*/summary.json")):
        data = _json(path)
        if data and isinstance(data.get("done"), int) and data["done"] > 0:
            name = "HumanEval" + (" held-out half" if data.get("half") == "heldout" else "") + \
                (" (leaky)" if data.get("leaky") else "") + \
                (f" · {Path(str(data['program'])).stem}" if data.get("program") else "")
            humaneval.setdefault(name, []).append((_mtime(path), data))
    for name, runs in humaneval.items():
        ts, last = runs[-1]
        benches.append(Bench(f"{name} raw", last.get("raw", 0) / last["done"], f"{last.get('raw', 0)}/{last['done']}",
                             ts, [r.get("raw", 0) / r["done"] for _, r in runs]))
        benches.append(Bench(f"{name} agent", last.get("agent", 0) / last["done"],
                             f"{last.get('agent', 0)}/{last['done']}", ts, [r.get("agent", 0) / r["done"] for _, r in runs]))
    suites = [(p, _json(p)) for p in _newest(root.glob("repair-suite/*.json"))]
    suites = [(p, d) for p, d in suites if d and d.get("total")]
    if suites:
        path, last = suites[-1]
        benches.append(Bench("repair suite (hidden)", last.get("passed", 0) / last["total"],
                             f"{last.get('passed', 0)}/{last['total']}", _mtime(path),
                             [d.get("passed", 0) / d["total"] for _, d in suites]))
    compiled = [(p, _json(p)) for p in _newest(root.glob("optimize/*.json"))]
    compiled = [(p, d) for p, d in compiled if d and isinstance(d.get("val_compiled"), (int, float))]
    if compiled:
        path, last = compiled[-1]
        benches.append(Bench(f"optimize {last.get('optimizer', '')} (visible, val)", float(last["val_compiled"]),
                             f"{last['val_compiled']:.2f} vs {last.get('val_default') or 0:.2f} default",
                             _mtime(path), [float(d["val_compiled"]) for _, d in compiled]))
    tools = [(p, _json(p)) for p in _newest(root.glob("bench-tools/*.json"))]
    tools = [(p, d) for p, d in tools if d and isinstance(d.get("results"), dict)]
    if tools:
        path, last = tools[-1]
        for mode, items in last["results"].items():
            if isinstance(items, list) and items:
                right = sum(bool(i.get("right")) for i in items if isinstance(i, dict))
                benches.append(Bench(f"tool choice ({mode})", right / len(items), f"{right}/{len(items)}", _mtime(path)))
    dedupe = [(p, _json(p)) for p in _newest(root.glob("bench-dedupe/*.json"))]
    dedupe = [(p, d) for p, d in dedupe if d and isinstance(d.get("runs"), dict)]
    if dedupe:
        path, last = dedupe[-1]
        for name, run in last["runs"].items():
            if isinstance(run, dict) and "f1" in run and name.startswith("libcore"):
                benches.append(Bench("dedupe F1 (libcore)", float(run["f1"]), f"{run['f1']:.3f}", _mtime(path)))
                break
    return benches, read_train(root / "train")


def read_train(folder: Path) -> list[TrainRun]:
    """Training runs: <folder>/<run>/metrics.jsonl, a line per logged step: {"step", "loss"} and {"step",
    "eval_loss"} (either may carry both)."""
    runs = []
    for path in _newest(folder.glob("*/metrics.jsonl")):
        run = TrainRun(path.parent.name, ts=_mtime(path))
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                point = json.loads(line)
            except ValueError:
                continue
            if not isinstance(point, dict) or not isinstance(point.get("step"), (int, float)):
                continue
            if isinstance(point.get("loss"), (int, float)):
                run.steps.append(point["step"])
                run.loss.append(point["loss"])
            if isinstance(point.get("eval_loss"), (int, float)):  # on a line of its own (assistant train) or not
                run.eval_loss.append(point["eval_loss"])
        runs.append(run)
    return runs


class RunsWatcher:
    """read_runs, again only when something under the runs folder changed (checked by the files' times)."""

    def __init__(self, root: Path):
        self.root = root
        self.stamp: tuple | None = None

    def poll(self) -> tuple[list[Bench], list[TrainRun]] | None:
        patterns = ("humaneval/*/summary.json", "repair-suite/*.json", "bench-tools/*.json", "bench-dedupe/*.json",
                    "train/*/metrics.jsonl")
        stamp = tuple(sorted((str(p), _mtime(p)) for pat in patterns for p in self.root.glob(pat)))
        if stamp == self.stamp:
            return None
        found = read_runs(self.root)
        self.stamp = stamp  # only once read: a failed read is tried again
        return found


def wait(stop, seconds: float) -> bool:
    """Sleep in short slices; True when stop() says to end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop():
            return True
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return stop()
