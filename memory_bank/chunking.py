"""Files worth indexing in a workspace, and their chunks: Python by definition, Markdown by section, the rest by line windows."""

from __future__ import annotations

import ast
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from assistant.workspace import SKIP_DIRS

BINARY_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".pdf", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z",
    ".tar", ".so", ".dylib", ".dll", ".exe", ".o", ".a", ".class", ".jar", ".pyc", ".pyo", ".whl", ".gguf",
    ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".npy", ".npz", ".faiss", ".sqlite", ".db", ".mp3", ".mp4",
    ".woff", ".woff2", ".ttf",
)
SNIFF_BYTES = 8192
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?$")
Span = Callable[[int, int, str], "list[Chunk]"]


@dataclass(frozen=True)
class Chunk:
    """Lines start..end (1-based, inclusive) of the file at path (POSIX, relative to the indexed root)."""

    path: str
    start: int
    end: int
    text: str
    symbol: str = ""

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start}"


def walk_files(root: Path, *, max_bytes: int = 1_000_000) -> Iterator[tuple[Path, str]]:
    """(absolute path, relative POSIX path) of the text files under root worth indexing, sorted by relative path.

    Honours .gitignore at every level (deeper files win, negations work) and .git/info/exclude, but not the
    rules of folders above root. Never enters hidden folders (".git", ".assistant", ".venv", ...), SKIP_DIRS or
    symlinked folders; skips hidden files (.env and the like hold secrets), files over max_bytes, symlinks leading
    outside root, and binary files.
    """
    top = str(Path(root).resolve())
    inherited = {top: _rules(os.path.join(top, ".git", "info", "exclude"), "")}
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        prefix = "" if dirpath == top else os.path.relpath(dirpath, top).replace(os.sep, "/") + "/"
        rules = inherited.pop(dirpath) + _rules(os.path.join(dirpath, ".gitignore"), prefix)
        dirnames[:] = [
            d for d in dirnames
            if not (d.startswith(".") or d in SKIP_DIRS or os.path.islink(os.path.join(dirpath, d))
                    or _ignored(rules, f"{prefix}{d}/"))
        ]
        inherited.update((os.path.join(dirpath, d), rules) for d in dirnames)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not name.startswith(".") and not _ignored(rules, prefix + name) and _indexable(path, top, max_bytes):
                found.append((Path(path), prefix + name))
    yield from sorted(found, key=lambda item: item[1])


def _rules(path: str, prefix: str) -> list[tuple[str, GitIgnoreSpec]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [(prefix, GitIgnoreSpec.from_lines(fh.read().splitlines()))]
    except OSError:
        return []


def _ignored(rules: list[tuple[str, GitIgnoreSpec]], rel: str) -> bool:
    """The verdict of the deepest ignore file with a matching rule (rules run from root down)."""
    for prefix, spec in reversed(rules):
        verdict = spec.check_file(rel[len(prefix):]).include
        if verdict is not None:
            return verdict
    return False


def _indexable(path: str, top: str, max_bytes: int) -> bool:
    if path.lower().endswith(BINARY_SUFFIXES):
        return False
    try:
        if os.path.islink(path) and not Path(os.path.realpath(path)).is_relative_to(top):
            return False
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return False
        with open(path, "rb") as fh:
            return b"\0" not in fh.read(SNIFF_BYTES)
    except OSError:
        return False


def read_text(path: Path) -> str | None:
    """The file decoded as UTF-8 (a BOM dropped, bad bytes replaced); None if it is binary or unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return None if b"\0" in data else data.decode("utf-8-sig", errors="replace")


def chunk_text(relpath: str, text: str, *, max_lines: int = 60, overlap: int = 5) -> list[Chunk]:
    """Split a file into chunks of at most max_lines lines; exact line numbers, blank edges trimmed."""
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()

    def span(lo: int, hi: int, symbol: str = "") -> list[Chunk]:
        while lo <= hi and not lines[lo - 1].strip():
            lo += 1
        while hi >= lo and not lines[hi - 1].strip():
            hi -= 1
        out = []
        start = lo
        while start <= hi:
            end = min(start + max_lines - 1, hi)
            body = "\n".join(lines[start - 1:end])
            if body.strip():
                out.append(Chunk(relpath, start, end, body, symbol))
            if end == hi:
                break
            start = max(end - overlap + 1, start + 1)
        return out

    suffix = os.path.splitext(relpath)[1].lower()
    if suffix in (".py", ".pyi"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse("\n".join(lines))
        except (SyntaxError, ValueError, RecursionError):
            return span(1, len(lines))
        return _python(lines, tree, span, max_lines)
    if suffix in (".md", ".markdown"):
        return _markdown(lines, span)
    return span(1, len(lines))


def _python(lines: list[str], tree: ast.Module, span: Span, max_lines: int) -> list[Chunk]:
    """A chunk per top-level definition (a long class: its header, then one per member), module code in between."""
    out: list[Chunk] = []

    def walk(body: list[ast.stmt], lo: int, hi: int, outer: str, owner: str) -> None:
        prev = lo - 1
        for node in body:
            if not isinstance(node, _DEFS):
                continue
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            while start - 1 > prev and lines[start - 2].lstrip().startswith("#"):
                start -= 1
            out.extend(span(prev + 1, start - 1, outer))
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            symbol = f"{owner}.{node.name}" if owner else f"{kind} {node.name}"
            if kind == "class" and not owner and node.end_lineno - start + 1 > max_lines:
                walk(node.body, start, node.end_lineno, symbol, node.name)
            else:
                out.extend(span(start, node.end_lineno, symbol))
            prev = node.end_lineno
        out.extend(span(prev + 1, hi, outer))

    walk(tree.body, 1, len(lines), "", "")
    return out


def _markdown(lines: list[str], span: Span) -> list[Chunk]:
    """A chunk per ATX-headed section (not counting '#' lines in fenced code), symbol the heading path."""
    out: list[Chunk] = []
    path: list[tuple[int, str]] = []
    start, fence = 1, ""
    for number, line in enumerate(lines, 1):
        if fenced := _FENCE.match(line):
            mark = fenced.group(1)
            if not fence:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence) and not line.strip().strip(mark[0]):
                fence = ""
        elif not fence and (heading := _HEADING.match(line)):
            out.extend(span(start, number - 1, " > ".join(title for _, title in path)))
            level = len(heading.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, re.sub(r"(?:^|[ \t]+)#+[ \t]*$", "", (heading.group(2) or "").strip())))
            start = number
    out.extend(span(start, len(lines), " > ".join(title for _, title in path)))
    return out
