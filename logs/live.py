"""The streamed model text, for watchers: `<session>.live` beside the audit log (the dashboard reads it; named by
the session, as several sessions may share one log).

The audit log keeps each reply once, whole (model_output); the pieces as they stream are only worth seeing
while they stream, so they go here instead: one JSON line per piece, `{"t": TEXT}`, and `{"end": 1}` when the
reply is over. Not fsynced and not hash-chained; removed when the session ends. A write that fails (a full
disk) turns the file off for the session with one warning: watching must never cost the session."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from assistant.hookspecs import hookimpl

log = logging.getLogger("assistant")
SUFFIX = ".live"


def live_path(audit_path: str | os.PathLike, session: str) -> Path:
    return Path(audit_path).parent / f"{session}{SUFFIX}"


class LiveStream:
    def __init__(self, audit_path: str | os.PathLike, session: str):
        self.path = live_path(audit_path, session)
        self._fh = None
        self._open = False  # a reply is streaming (pieces written, no end yet)
        self._off = False

    def _write(self, record: dict) -> None:
        if self._off:
            return
        try:
            if self._fh is None:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                self._fh = os.fdopen(fd, "a", encoding="ascii")
            self._fh.write(json.dumps(record, ensure_ascii=True) + "\n")
            self._fh.flush()
        except (OSError, ValueError) as exc:
            self._off = True
            log.warning("streamed text is not shared with watchers this session: %s",
                        getattr(exc, "strerror", None) or exc)

    @hookimpl(tryfirst=True)  # the end of a reply goes out before the audit log records it whole
    def on_event(self, event):
        if event.kind == "token":
            self._open = True
            self._write({"t": event.text})
        elif self._open:  # whatever comes next (model_output first) ends the reply
            self._open = False
            self._write({"end": 1})

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        try:
            self.path.unlink()
        except OSError:
            pass
