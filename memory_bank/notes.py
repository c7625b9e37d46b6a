"""Global notes: a Markdown file of timestamped lines under ASSISTANT_HOME/memory_bank/global.md."""

from __future__ import annotations

import contextlib
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
        with _locked():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as exc:
        raise AssistantError(f"cannot write {path}: {exc.strerror}") from None
    return line.strip()


@contextlib.contextmanager
def _locked():
    """One writer at a time, on a lock file beside the notes (forget() replaces the notes file itself)."""
    fd = os.open(notes_path().with_name("global.md.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_notes(limit: int | None = None) -> list[str]:
    try:
        lines = [l.rstrip("\n") for l in notes_path().read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
    except FileNotFoundError:
        return []
    return lines[-limit:] if limit else lines


def split_note(line: str) -> tuple[str, str]:
    """("YYYY-MM-DD HH:MM:SS", text) of a note line; a line edited by hand without a time gives ("", text)."""
    body = line[2:] if line.startswith("- ") else line
    parts = body.split(" ", 2)
    if len(parts) == 3 and len(parts[0]) == 10 and parts[0][4] == "-" and ":" in parts[1]:
        return f"{parts[0]} {parts[1]}", parts[2]
    return "", body.strip()


def forget(number: int) -> str:
    """Remove note `number` (1-based, as `/memory` lists them) from the notes file; returns its line."""
    from assistant.workspace import replace_file

    try:
        with _locked():
            lines = read_notes()
            if not 1 <= number <= len(lines):
                raise AssistantError(f"no note {number}: there are {len(lines)} (`/memory` lists them)")
            gone = lines.pop(number - 1)
            replace_file(notes_path(), "".join(l + "\n" for l in lines).encode("utf-8"), 0o600, durable=True)
    except OSError as exc:
        raise AssistantError(f"cannot rewrite {notes_path()}: {exc.strerror}") from None
    return gone
