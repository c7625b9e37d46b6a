"""Hybrid search over a workspace's files (and, optionally, the installed packages' docs): BM25 (bm25s) over
code-aware tokens plus MiniLM vectors in a VectorStore, fused by reciprocal rank.

The workspace index lives in <workspace>/.assistant/index; the installed packages' one in
<home>/memory_bank/installed/<environment>. Updates are incremental by content hash: an unchanged file (or an
installed package at the same version) is never chunked or embedded again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import shutil
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from assistant.home import subdir
from assistant.memory_bank.chunking import Chunk, chunk_text, read_text, walk_files
from assistant.memory_bank.store import VectorStore
from assistant.text import clean_text

RRF_K = 60  # reciprocal rank fusion: score = sum of 1 / (RRF_K + rank) over the rankings a hit is in
CANDIDATES = 50  # hits taken from each ranking before fusing
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


# English words that carry no meaning for BM25 in a question about code ("where is the file read").
STOPWORDS = frozenset("""a an and are as at be but by for if in into is it no not of on or such that the their then
there these they this to was will with what when where which who why how do does did i we you my our your me can
could should would from has have had any all some""".split())


def tokens(text: str) -> list[str]:
    """Lower-case identifiers and their parts, stopwords left out: `readFile_now` gives readfile_now, read,
    file, now."""
    out = []
    for word in _WORD.findall(text):
        low = word.lower()
        if low in STOPWORDS:
            continue
        out.append(stem(low))
        parts = [p.lower() for piece in word.split("_") for p in _CAMEL.findall(piece)]
        if len(parts) > 1:
            out += [stem(p) for p in parts]
    return out


def stem(word: str) -> str:
    """A light English suffix strip (repeats, repeated, repeating -> repeat), enough for BM25 to match forms."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


@dataclass
class Result:
    record: dict
    score: float  # the fused score
    cosine: float | None  # the vector similarity, when the vector ranking found it

    @property
    def location(self) -> str:
        r = self.record
        where = f"{r['path']}:{r['start']}"
        return f"{r['package']}:{where}" if r.get("package") else where

    def snippet(self, query: str, lines: int = 3, width: int = 160) -> str:
        """A few lines of the chunk, starting at the first that mentions a query word."""
        body = self.record["text"].split("\n")[1:]  # the first line is the header added for embedding
        words = set(tokens(query))
        first = next((i for i, l in enumerate(body) if words & set(tokens(l))), 0)
        picked = [l.rstrip()[:width] for l in body[first:first + lines] if l.strip()]
        return "\n".join(picked)


def _defined_name(record: dict) -> str:
    """`read_file` for a chunk of "def read_file" or "Files.read_file"; "" for other chunks."""
    symbol = record.get("symbol", "").split("\n")[0].split("(")[0]
    return symbol.split()[-1].split(".")[-1].lower() if symbol else ""


def _header(path: str, symbol: str, package: str = "") -> str:
    return " · ".join(x for x in (package, path, symbol) if x)


def _chunk_records(chunks: list[Chunk], package: str = "") -> list[dict]:
    return [{"kind": "chunk", "path": c.path, "start": c.start, "end": c.end, "symbol": c.symbol,
             "package": package, "text": _header(c.path, c.symbol, package) + "\n" + c.text} for c in chunks]


class HybridIndex:
    """One searchable collection of chunks: a VectorStore plus a BM25 index, rebuilt when the records change and
    kept on disk beside them (`bm25/`, tagged with the records it was built from)."""

    def __init__(self, folder: Path, embedder):
        self.store = VectorStore(folder, embedder)
        self._bm25 = None
        self._bm25_ids: list[int] = []
        self._bm25_tag = ""

    def _lexical(self):
        import bm25s

        records = self.store.records
        ids = list(records)
        # An id can be given again after a removal: the records' times tell versions apart.
        tag = hashlib.sha256(json.dumps([[i, records[i].get("ts")] for i in ids]).encode()).hexdigest()
        if self._bm25 is not None and self._bm25_tag == tag:
            return self._bm25
        folder = self.store.folder / "bm25"
        try:
            if (folder / "ids.sha256").read_text() == tag:
                loaded = bm25s.BM25.load(str(folder), show_progress=False)
                if loaded.scores["num_docs"] == len(ids):
                    self._bm25, self._bm25_ids, self._bm25_tag = loaded, ids, tag
                    return self._bm25
        except Exception:  # noqa: BLE001 - missing, stale, half-written or unreadable: built again below
            pass
        self._bm25, self._bm25_ids, self._bm25_tag = bm25s.BM25(), ids, tag
        self._bm25.index([tokens(records[i]["text"]) or ["_"] for i in ids], show_progress=False)
        tmp = folder.with_name(f"bm25.tmp-{os.getpid()}")
        try:  # written aside, then swapped in: a reader sees the old cache, none, or the new one
            self._bm25.save(str(tmp), show_progress=False)
            (tmp / "ids.sha256").write_text(tag)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # a cache not written only costs the next search a rebuild
        return self._bm25

    def ranked(self, query: str, vector=None, n: int = CANDIDATES) -> tuple[list[int], list[tuple[int, float]]]:
        """(record ids by BM25, [(record id, cosine)] by vectors), best first; `vector`: the query's embedding."""
        hits = self.store.search(query if vector is None else vector, n)
        if not self.store.records:
            return [], []
        bm25 = self._lexical()
        words = [t for t in tokens(query) if t in bm25.vocab_dict]
        lexical = []
        if words:
            found, scores = bm25.retrieve([words], k=min(n, len(self._bm25_ids)), show_progress=False)
            lexical = [self._bm25_ids[int(i)] for i, s in zip(found[0], scores[0]) if s > 0]
        return lexical, [(h.record["id"], h.score) for h in hits]


def is_prose(query: str) -> bool:
    """Three or more plain words and no identifier (snake_case, camelCase, dotted or called)."""
    words = query.split()
    return len(words) >= 3 and not re.search(r"[_.(]|[a-z][A-Z]", query)


def fuse(indexes: list[HybridIndex], query: str, k: int = 5) -> list[Result]:
    """Reciprocal rank fusion of three rankings of every index: definitions named like a word of the query,
    BM25, and vectors. A query in prose leans on meaning (BM25 counts half), one with identifiers on words."""
    words = _WORD.findall(query)
    names = {w.lower() for w in words if len(words) == 1 or "_" in w or re.search(r"[a-z][A-Z]", w)}
    names |= {p.lower() for dotted in re.findall(r"\w+(?:\.\w+)+", query) for p in dotted.split(".")}
    weights = {"name": 2.0, "lexical": 0.5 if is_prose(query) else 1.0, "vector": 1.0}
    scored: dict[tuple[int, int], list] = {}
    for index in indexes:
        index.store.load()
    indexes = [i for i in indexes if len(i.store)]
    vec = indexes[0].store.embedder.encode([query]) if indexes else None
    for n, index in enumerate(indexes):
        lexical, vector = index.ranked(query, vec)
        records = index.store.records  # after ranked(): it may have re-read them
        named = [rid for rid in lexical if _defined_name(records[rid]) in names]
        for kind, ranking in (("name", named), ("lexical", lexical), ("vector", [rid for rid, _ in vector])):
            for rank, rid in enumerate(ranking):
                entry = scored.setdefault((n, rid), [0.0, None, records[rid]])
                entry[0] += weights[kind] / (RRF_K + rank + 1)
        for rid, cosine in vector:
            scored[(n, rid)][1] = cosine
    best = sorted(scored.values(), key=lambda e: -e[0])[:k]
    return [Result(record, score, cosine) for score, cosine, record in best]


# --- the workspace ---------------------------------------------------------------------------------------


@dataclass
class UpdateStats:
    files: int = 0  # files seen
    changed: int = 0  # files (or packages) chunked and embedded again
    removed: int = 0  # files gone since the last update
    chunks: int = 0  # chunks embedded
    total: int = 0  # records in the index afterwards


def _update(index: HybridIndex, sources: Iterable[tuple[str, str, Callable[[], list[dict] | None] | None]], *,
            prune: bool = True, progress=None, on_plan=None) -> UpdateStats:
    """Incremental update from (source, version, make_records) triples: a source whose records carry the same
    version is left alone, a changed one replaced, one no longer listed removed (when `prune`). `on_plan(n)` is
    told how many chunks will be embedded before `progress(n)` counts them. Changes are named by source, not by
    record id, so another process updating at the same time cannot leave duplicates."""
    store = index.store
    store.load()
    known: dict[str, str | None] = {}
    for rec in store.records.values():
        known[rec.get("source", "")] = rec.get("version")
    stats, add, drop, seen = UpdateStats(), [], set(), set()
    for source, version, make in sources:
        stats.files += 1
        seen.add(source)
        if make is None or (source in known and known[source] == version):
            continue
        records = make() or []
        if source in known:
            drop.add(source)
        if records:
            stats.changed += 1
            add += [{**r, "source": source, "version": version} for r in records]
    gone = {source for source in known if source not in seen} if prune else set()
    stats.removed = len(gone)
    if on_plan:
        on_plan(len(add))
    store.update(add, progress=progress, key="source", drop=drop | gone)
    stats.chunks, stats.total = len(add), len(store)
    return stats


def update_workspace(root: Path, index: HybridIndex, progress: Callable[[int], None] | None = None,
                     on_plan: Callable[[int], None] | None = None) -> UpdateStats:
    """Bring the index up to date with the files under root. A file's version is its content's sha256; a file
    whose size and modification time are those recorded is not even read."""
    index.store.load()
    recorded = {r.get("source"): (r.get("stat"), r.get("version")) for r in index.store.records.values()}

    def files():
        for path, rel in walk_files(root):
            rel = clean_text(rel)  # a file name that is not UTF-8 would stop the tokenizer (U+FFFD instead)
            try:
                st = path.stat()
                stamp = [st.st_size, st.st_mtime_ns]
                if recorded.get(rel, (None, None))[0] == stamp:
                    yield rel, recorded[rel][1], None  # unchanged: the version matches, nothing is made
                    continue
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                continue
            yield rel, digest, lambda path=path, rel=rel, stamp=stamp: _file_records(path, rel, stamp)

    return _update(index, files(), progress=progress, on_plan=on_plan)


def _file_records(path: Path, rel: str, stamp: list[int]) -> list[dict] | None:
    text = read_text(path)
    return None if text is None else [{**r, "stat": stamp} for r in _chunk_records(chunk_text(rel, text))]


# --- installed packages ---------------------------------------------------------------------------------


def installed_index_dir() -> Path:
    env = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return subdir("memory_bank") / "installed" / env


def _docstrings(module: str, text: str) -> Iterator[tuple[int, int, str, str]]:
    """(first line, last line, qualified name with signature, docstring) of a module's documented objects."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    doc = ast.get_docstring(tree)
    if doc:
        yield 1, tree.body[0].end_lineno or 1, module, doc

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{node.name}"
                doc = ast.get_docstring(node)
                if doc and (not node.name.startswith("_") or node.name == "__init__"):
                    sig = "" if isinstance(node, ast.ClassDef) else f"({ast.unparse(node.args)})"
                    yield node.lineno, node.end_lineno or node.lineno, f"{module}.{name}{sig}", doc
                if isinstance(node, ast.ClassDef):
                    yield from walk(node.body, name + ".")

    yield from walk(tree.body, "")


def package_chunks(dist: importlib.metadata.Distribution) -> list[dict]:
    """The README (the package's long description) and the public docstrings of one installed distribution."""
    name = dist.metadata["Name"]
    package = f"{name}=={dist.version}"
    readme = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
    records = _chunk_records(chunk_text("README.md", readme), package) if readme.strip() else []
    for file in dist.files or []:
        if file.suffix != ".py" or "tests" in file.parts or "test" in file.parts or file.name.startswith("test_"):
            continue
        path = Path(dist.locate_file(file))
        text = read_text(path) if path.is_file() else None
        if not text:
            continue
        module = ".".join(file.with_suffix("").parts).removesuffix(".__init__")
        for start, end, qualname, doc in _docstrings(module, text):
            records += _chunk_records([Chunk(file.as_posix(), start, end, f"{qualname}\n{doc}", qualname)], package)
    return records


def update_installed(index: HybridIndex, names: list[str] = (), progress=None, on_plan=None) -> UpdateStats:
    """Index the installed distributions (or only `names`) at their installed versions; a package whose
    version changed is indexed again, one that is gone is dropped (when all are indexed)."""
    wanted = {n.lower().replace("_", "-") for n in names}

    def packages():
        for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
            key = dist.metadata["Name"].lower().replace("_", "-")
            if not wanted or key in wanted:
                yield key, dist.version, lambda dist=dist: package_chunks(dist)

    return _update(index, packages(), prune=not wanted, progress=progress, on_plan=on_plan)


def cosine_of(results: list[Result]) -> float:
    """The best vector similarity among results (0 when none came from the vector ranking)."""
    return max([r.cosine for r in results if r.cosine is not None] or [0.0])

