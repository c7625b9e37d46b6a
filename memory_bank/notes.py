"""Global notes: a Markdown file of timestamped lines under ASSISTANT_HOME/memory_bank/global.md."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from assistant.errors import AssistantError
from assistant.home import subdir


def notes_path() -> Path:
    return subdir("memory_bank") / "global.md"


def remember(text: str) -> str:
    """Append one note (fsynced, under a lock); returns the line written."""
    text = " ".join(text.split())
    if not text:
        raise AssistantError("nothing to remember: the note is empty")
    line = f"- {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n"
    path = notes_path()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AssistantError(f"cannot write {path}: {exc.strerror}") from None
    return line.strip()


def read_notes(limit: int | None = None) -> list[str]:
    try:
        lines = [l.rstrip("\n") for l in notes_path().read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    except FileNotFoundError:
        return []
    return lines[-limit:] if limit else lines
