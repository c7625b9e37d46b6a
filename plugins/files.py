"""File tools: list, read, write and edit files inside the workspace (every write is snapshotted for /undo)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from assistant.errors import ToolError
from assistant.hookspecs import hookimpl
from assistant.workspace import SKIP_DIRS, replace_file

MAX_READ_LINES = 400


def _decode(data: bytes) -> tuple[str, bool]:
    """Text for display; surrogateescape keeps undecodable bytes so an edit writes them back unchanged."""
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="surrogateescape"), False


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


def _shown(path: Path, context) -> str:
    try:
        return str(path.relative_to(context.workspace.root))
    except ValueError:
        return str(path)


def list_files(path: str = ".", max_depth: int = 1, context=None) -> str:
    """List the files and folders under a folder of the workspace.

    Args:
        path: The folder to list, relative to the workspace.
        max_depth: How many folder levels to descend.
    """
    root = context.workspace.resolve(path)
    if not root.is_dir():
        raise ToolError(f"{path}: not a folder")
    lines: list[str] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base_depth
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".assistant"))
        rel = Path(dirpath).relative_to(root)
        prefix = "" if str(rel) == "." else f"{rel}/"
        for d in dirnames:
            lines.append(f"{prefix}{d}/")
        for f in sorted(filenames):
            lines.append(f"{prefix}{f}")
        if depth + 1 >= max_depth:
            dirnames[:] = []
        if len(lines) > 500:
            lines = lines[:500] + ["... (more entries not shown)"]
            break
    return "\n".join(sorted(lines)) if lines else "(empty folder)"


def read_file(path: str, start_line: int = 1, max_lines: int = 200, context=None) -> str:
    """Read a text file of the workspace; lines are numbered.

    Args:
        path: The file to read, relative to the workspace.
        start_line: The first line to show (1-based).
        max_lines: How many lines to show at most.
    """
    target = context.workspace.resolve(path)
    if not target.is_file():
        raise ToolError(f"{path}: no such file")
    data = target.read_bytes()
    if _is_binary(data):
        return f"{path}: binary file, {len(data)} bytes (not shown)"
    text, clean = _decode(data)
    text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    lines = text.splitlines()
    start = max(1, int(start_line))
    count = max(1, min(int(max_lines), MAX_READ_LINES))
    chunk = lines[start - 1 : start - 1 + count]
    body = "\n".join(f"{n:>5}  {line}" for n, line in enumerate(chunk, start))
    notes = []
    if not clean:
        notes.append("(not valid UTF-8: undecodable bytes shown as \ufffd)")
    if start - 1 + count < len(lines):
        notes.append(f"(lines {start}-{start + len(chunk) - 1} of {len(lines)}; use start_line to read on)")
    return "\n".join([body or "(empty file)"] + notes)


def _diff(path: str, old: str, new: str) -> str:
    diff = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                fromfile=f"a/{path}", tofile=f"b/{path}")
    text = "".join(diff)
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace") or "(no change)"


def _write(target: Path, new: str, context, label: str) -> None:
    if context.undo:
        context.undo.before_paths(label, [target])
    mode = target.stat().st_mode & 0o7777 if target.exists() else None
    replace_file(target, new.encode("utf-8", errors="surrogateescape"), mode)


def write_file(path: str, content: str, context=None) -> str:
    """Create or overwrite a file of the workspace with the given content; returns the diff.

    Args:
        path: The file to write, relative to the workspace.
        content: The complete new content of the file.
    """
    target = context.workspace.resolve(path, for_write=True)
    if target.is_dir():
        raise ToolError(f"{path}: is a folder")
    old = _decode(target.read_bytes())[0] if target.exists() else ""
    _write(target, content, context, f"write_file {path}")
    return f"wrote {_shown(target, context)} ({len(content.encode('utf-8', 'surrogateescape'))} bytes)\n" + _diff(path, old, content)


def edit_file(path: str, old_text: str, new_text: str, context=None) -> str:
    """Replace one exact occurrence of old_text with new_text in a file of the workspace; returns the diff.

    Args:
        path: The file to edit, relative to the workspace.
        old_text: Text that occurs exactly once in the file.
        new_text: The text to put in its place.
    """
    target = context.workspace.resolve(path, for_write=True)
    if not target.is_file():
        raise ToolError(f"{path}: no such file")
    data = target.read_bytes()
    if _is_binary(data):
        raise ToolError(f"{path}: binary file, not edited")
    old, _ = _decode(data)
    if not old_text:
        raise ToolError("old_text is empty")
    count = old.count(old_text)
    if count == 0:
        raise ToolError(f"{path}: old_text not found (read the file first and copy the text exactly)")
    if count > 1:
        raise ToolError(f"{path}: old_text occurs {count} times; include more context so it occurs once")
    new = old.replace(old_text, new_text, 1)
    _write(target, new, context, f"edit_file {path}")
    return f"edited {_shown(target, context)}\n" + _diff(path, old, new)


@hookimpl
def register_tools(register):
    register(list_files)
    register(read_file)
    register(write_file)
    register(edit_file)
