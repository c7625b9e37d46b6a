"""The user's workspace: path checks for file tools, and the snapshots behind /undo."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ToolError
from assistant.home import home

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".tox"}
SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024
SNAPSHOT_MAX_FILES = 20000


class Workspace:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def resolve(self, path: str, *, for_write: bool = False) -> Path:
        """Resolve a tool's path (symlinks included) and refuse anything that leaves the workspace."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("path must be a non-empty string")
        if "\x00" in path:
            raise ToolError("path contains a NUL byte")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise ToolError(f"{path}: outside the workspace {self.root}")
        if [p.lower() for p in real.relative_to(self.root).parts[:2]] == [".assistant", "memory"]:
            raise ToolError(f"{path}: the assistant's memory is not readable by tools (/memory shows it)")
        if for_write:
            first = real.relative_to(self.root).parts[:1]
            # .git as a whole (hooks, config: core.hooksPath, fsmonitor run commands) and our own settings;
            # compared case-insensitively for case-insensitive file systems.
            if first and first[0].lower() in (".git", ".assistant"):
                raise ToolError(f"{path}: protected path, not writable by tools")
            protected = home().resolve()
            if real == protected or protected in real.parents:
                raise ToolError(f"{path}: the assistant's own data is not writable by tools")
        return real

    def files(self) -> list[Path]:
        """Every regular file of the workspace except the usual generated folders."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for name in sorted(filenames):
                found.append(Path(dirpath) / name)
        return found


def replace_file(path: Path, data: bytes, mode: int | None = None, *, durable: bool = False) -> None:
    """Write data to path atomically through a fresh temporary file (O_EXCL: never through a planted symlink).
    durable: fsync the file before the rename and the folder after it, so a crash leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".assistant-tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class Snapshot:
    """Files as they were before one tool call: restore() puts them back (and removes files it created)."""

    label: str
    saved: dict[Path, bytes | None] = field(default_factory=dict)
    complete: bool = True

    def restore(self) -> list[Path]:
        restored = []
        for path, data in self.saved.items():
            if data is None:
                if path.exists():
                    path.unlink()
                    restored.append(path)
            else:
                replace_file(path, data)
                restored.append(path)
        return restored


class UndoStack:
    """Snapshots taken before every write; `before_paths` for file tools, `before_workspace` for commands."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.stack: list[Snapshot] = []
        self._pending: tuple[Snapshot, dict[Path, tuple[int, int]]] | None = None

    def before_paths(self, label: str, paths: list[Path]) -> None:
        snap = Snapshot(label)
        for p in paths:
            snap.saved[p] = p.read_bytes() if p.is_file() else None
        self.stack.append(snap)

    def before_workspace(self, label: str) -> None:
        """Copy the workspace's files (within a size budget) so whatever a command changes can be undone."""
        snap, stats, total = Snapshot(label), {}, 0
        for p in self.workspace.files()[:SNAPSHOT_MAX_FILES + 1]:
            try:
                st = p.stat()
            except OSError:
                continue
            total += st.st_size
            if total > SNAPSHOT_MAX_BYTES or len(stats) >= SNAPSHOT_MAX_FILES:
                snap.complete = False
                break
            try:
                snap.saved[p] = p.read_bytes()
            except OSError:
                continue
            stats[p] = (st.st_mtime_ns, st.st_size)
        self._pending = (snap, stats)

    def after_workspace(self) -> None:
        """Keep only the files the command changed, created or deleted."""
        if not self._pending:
            return
        snap, stats = self._pending
        self._pending = None
        now = {}
        for p in self.workspace.files():
            try:
                st = p.stat()
            except OSError:
                continue
            now[p] = (st.st_mtime_ns, st.st_size)
        changed: dict[Path, bytes | None] = {}
        for p, before in stats.items():
            if now.get(p) != before:
                changed[p] = snap.saved[p]
        if snap.complete:
            for p in now.keys() - stats.keys():
                changed[p] = None
        if changed:
            self.stack.append(Snapshot(snap.label, changed, snap.complete))

    def undo(self) -> tuple[str, list[Path]] | None:
        if not self.stack:
            return None
        snap = self.stack.pop()
        return snap.label, snap.restore()
