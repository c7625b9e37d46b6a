"""Audit log records: {"v": 1, "ts", "session", "seq", "kind", "data", "prev"}, where prev is the sha256 of the
previous line (without its newline; 64 zeros for the first). One write and one fsync per record, under an
exclusive lock so two processes can share a file; a torn last line (a crash mid-write) is cut off on open."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from assistant.errors import AuditError
from assistant.hookspecs import hookimpl

VERSION = 1
GENESIS = "0" * 64
SKIPPED_KINDS = {"token"}  # streamed pieces: the whole output is recorded once as model_output


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _tail(fd: int) -> tuple[int, str, int]:
    """(size after repair, hash of the last line, seq of the last record) of an open log file."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0, GENESIS, -1
    # Read back far enough to find the last complete line.
    chunk = 1 << 16
    pos = size
    data = b""
    while pos > 0:
        step = min(chunk, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        if data.count(b"\n") >= 2 or pos == 0:
            break
    if not data.endswith(b"\n"):
        cut = data.rfind(b"\n")
        keep = pos + cut + 1 if cut >= 0 else 0
        os.ftruncate(fd, keep)  # a torn last line: the record was never acknowledged
        os.fsync(fd)
        size = keep
        data = data[: cut + 1] if cut >= 0 else b""
    lines = data.splitlines()
    if not lines:
        return size, GENESIS, -1
    last = lines[-1]
    try:
        seq = int(json.loads(last)["seq"])
    except (ValueError, KeyError, TypeError):
        raise AuditError("the last record of the audit log is not valid; run `assistant audit verify`") from None
    return size, line_hash(last), seq


class AuditLog:
    """Appends records to one file; registered as a plugin so it hears every event (`on_event`)."""

    def __init__(self, path: str | os.PathLike, session: str):
        self.path = Path(path)
        self.session = session
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                os.close(self.fd)
                raise AuditError(f"the audit log {self.path} must be a regular file")
            with self._locked():
                self._size, self._prev, self._seq = _tail(self.fd)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc.strerror}") from None

    def _locked(self):
        fd = self.fd

        class Lock:
            def __enter__(self):
                fcntl.flock(fd, fcntl.LOCK_EX)

            def __exit__(self, *exc):
                fcntl.flock(fd, fcntl.LOCK_UN)

        return Lock()

    def append(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Write one record and fsync it; when this returns, the record survives a crash."""
        with self._locked():
            if os.fstat(self.fd).st_size != self._size:  # another writer appended: re-read the chain's end
                self._size, self._prev, self._seq = _tail(self.fd)
            record = {"v": VERSION, "ts": time.time(), "session": self.session, "seq": self._seq + 1,
                      "kind": kind, "data": data, "prev": self._prev}
            # ASCII escapes: any str (lone surrogates from undecodable file names included) encodes.
            line = json.dumps(record, ensure_ascii=True, default=_json_default).encode("ascii") + b"\n"
            try:
                written = os.write(self.fd, line)
                if written != len(line):
                    raise OSError(28, "short write")
                os.fsync(self.fd)
            except OSError as exc:
                # Leave no partial line behind: cut back to the last good record.
                try:
                    os.ftruncate(self.fd, self._size)
                except OSError:
                    pass
                raise AuditError(f"cannot write the audit log {self.path}: {exc.strerror or exc}") from None
            self._size += len(line)
            self._prev = line_hash(line)
            self._seq += 1
        return record

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @hookimpl
    def on_event(self, event):
        recorded = event_record(event)
        if recorded:
            self.append(*recorded)


def event_record(event) -> tuple[str, dict] | None:
    """(kind, data) as a record holds an event (a meta event's own name is its kind); None for streamed tokens.
    The audit log and telemetry (assistant/telemetry.py) both write this."""
    if event.kind in SKIPPED_KINDS:
        return None
    data = event.to_record()
    if event.kind == "meta":
        return data.pop("name"), data.get("data", {})
    return event.kind, data


@dataclass
class Problem:
    line: int
    message: str


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                raise AuditError(f"{path}: line {n} is not JSON") from None


def verify(path: str | os.PathLike) -> tuple[int, Problem | None]:
    """Check every record and the hash chain; return (records checked, the first problem or None)."""
    prev, expected_seq, count = GENESIS, 0, 0
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                return count, Problem(n, "torn last line (incomplete record)")
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                return count, Problem(n, "not valid JSON")
            if not isinstance(rec, dict) or rec.get("v") != VERSION:
                return count, Problem(n, f"unknown record version {rec.get('v') if isinstance(rec, dict) else rec!r}")
            missing = {"ts", "session", "seq", "kind", "data", "prev"} - set(rec)
            if missing:
                return count, Problem(n, f"missing field {sorted(missing)[0]!r}")
            if rec["prev"] != prev:
                return count, Problem(n, f"seq {rec['seq']}: prev hash does not match the line before (edited or removed record)")
            if rec["seq"] != expected_seq:
                return count, Problem(n, f"seq {rec['seq']}: expected seq {expected_seq}")
            prev, expected_seq, count = line_hash(raw), expected_seq + 1, count + 1
    return count, None
