"""A vector store in one folder: records (JSONL, the truth) and a FAISS index of their vectors (inner product on
unit vectors = cosine), ids shared between the two.

Durability (SECURITY.md, "SIGKILL during a memory/index save"):
- the index is written whole to a temporary file, fsynced and renamed over the old one; the records come after:
  appended and fsynced for additions, rewritten the same atomic way for removals (which go first, index after);
- so a crash leaves at worst index vectors without a record (an unacknowledged addition, or a removal half
  done): they are dropped on load; records without vectors (an index set aside) are embedded again;
- an index that does not load is renamed `index.faiss.corrupt-<time>` and rebuilt from the records;
- one writer at a time: every change holds an exclusive flock on `.lock` and first re-reads what another process
  wrote since; a change planned before the lock names what it replaces by a field (`update(key=...)`), and ids
  are never given twice (the `next_id` mark), so a late writer cannot duplicate or remove the wrong record.

Exact search (a flat index) below APPROX_FROM vectors, HNSW above; `assistant bench memory` measured the
crossing point and the HNSW settings (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from assistant.errors import AssistantError
from assistant.workspace import replace_file

log = logging.getLogger("assistant.memory")

RECORDS, INDEX, LOCK, NEXT_ID = "records.jsonl", "index.faiss", ".lock", "next_id"
# Measured with `assistant bench memory` on 100k MiniLM vectors of real text (docs/benchmarks.md): exact search
# costs about 2 ms per query at 10k vectors and 16-19 ms at 100k; HNSW with M=48 and efSearch=96 answers in about
# 1 ms at 100k with recall@10 of 0.98 (M=32 needed efSearch=128 for 0.956).
APPROX_FROM = 10_000
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 48, 80, 96


@dataclass
class Hit:
    score: float
    record: dict


def embedded_text(record: dict) -> str:
    """What a record's vector is made from: its "key" when it has one (a kept turn: the request), else its text."""
    return record.get("key") or record["text"]


def _faiss():
    import faiss

    return faiss


def new_index(n: int, dim: int):
    """An empty id-mapped index for about n vectors: exact below APPROX_FROM, HNSW at and above."""
    faiss = _faiss()
    if n >= APPROX_FROM:
        inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap2(inner)


def is_approximate(index) -> bool:
    return "HNSW" in type(_faiss().downcast_index(index.index)).__name__


def index_ids(index) -> np.ndarray:
    return _faiss().vector_to_array(index.id_map).astype(np.int64)


class VectorStore:
    """Records with an id, a kind and a text (plus any JSON fields), searchable by meaning."""

    def __init__(self, folder: str | os.PathLike, embedder):
        self.folder = Path(folder).expanduser()
        self.embedder = embedder
        self.records: dict[int, dict] = {}
        self.index = None
        self._seen: tuple[int, int] | None = None
        self._mutex = threading.RLock()

    # --- locking and loading -------------------------------------------------------------------------

    def _create(self) -> None:
        """The folder, made on first use (a workspace gets .assistant/ only when something is kept there)."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            ignore = self.folder / ".gitignore"
            if not ignore.exists():  # never committed by accident when it lives in a workspace
                ignore.write_text("# written by assistant: runtime data\n*\n")
        except OSError as exc:
            raise AssistantError(f"cannot create {self.folder}: {exc.strerror}") from None

    @contextlib.contextmanager
    def _locked(self):
        with self._mutex:
            self._create()
            try:
                fd = os.open(self.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise AssistantError(f"cannot lock {self.folder}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.folder / RECORDS).stat()
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def load(self) -> "VectorStore":
        if not self.folder.exists():  # nothing kept yet: an empty store, and no folder made for it
            self.records, self.index, self._seen = {}, None, None
            return self
        with self._locked():
            self._load_locked()
        return self

    def _refresh(self) -> None:
        """Under the lock: re-read when another process (or nobody yet) changed the records since we did."""
        if self.index is None or self._seen is None or self._stamp() != self._seen:
            self._load_locked()

    def _load_locked(self) -> None:
        self.records = self._read_records()
        self.index = self._read_index()
        self._reconcile()
        self._seen = self._stamp()

    def _read_records(self) -> dict[int, dict]:
        path = self.folder / RECORDS
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise AssistantError(f"cannot read {path}: {exc.strerror}") from None
        if data and not data.endswith(b"\n"):  # a torn last line: that record was never acknowledged
            keep = data.rfind(b"\n") + 1
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            data = data[:keep]
        records = {}
        for number, line in enumerate(data.splitlines(), 1):
            try:
                rec = json.loads(line)
                ok = (isinstance(rec, dict) and type(rec.get("id")) is int and 0 <= rec["id"] < 2**62
                      and isinstance(rec.get("text"), str) and isinstance(rec.get("key", ""), str))
            except ValueError:  # OverflowError is one
                ok = False
            if ok:
                records[rec["id"]] = rec
            else:
                log.warning("%s line %d is not a record (an id and a text); skipped", path, number)
        return records

    def _read_index(self):
        path = self.folder / INDEX
        if not path.exists():
            return None
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
            if not isinstance(index, faiss.IndexIDMap2) or index.d != self.embedder.dim:
                raise ValueError("not an id-mapped index of this embedder's dimension")
            return index
        except (RuntimeError, ValueError) as exc:
            aside = path.with_name(f"{INDEX}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            why = str(exc) if isinstance(exc, ValueError) else "faiss cannot read it"
            log.warning("%s did not load (%s); set aside as %s and rebuilt from the records", path, why, aside.name)
            return None

    def _reconcile(self) -> None:
        """Make the index hold exactly the records' vectors (see the module docstring for why they may differ)."""
        rebuilt = self.index is None
        if rebuilt:
            self.index = new_index(len(self.records), self.embedder.dim)
        have = set(index_ids(self.index).tolist())
        orphans = have - self.records.keys()
        missing = sorted(self.records.keys() - have)
        if orphans:
            self._remove_vectors(orphans)
        if missing:
            texts = [embedded_text(self.records[i]) for i in missing]
            self._add_vectors(self.embedder.encode(texts), np.array(missing, dtype=np.int64))
        if (orphans or missing) or (rebuilt and self.records):
            self._save_index()

    # --- the index ----------------------------------------------------------------------------------

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        ids = index_ids(self.index)
        return ids, self.index.index.reconstruct_n(0, len(ids)) if len(ids) else np.zeros((0, self.embedder.dim), np.float32)

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index = new_index(len(ids), self.embedder.dim)
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def _add_vectors(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        total = self.index.ntotal + len(ids)
        if total >= APPROX_FROM and not is_approximate(self.index):  # grown past exact search: rebuild as HNSW
            old_ids, old = self._vectors()
            self._rebuild(np.concatenate([old_ids, ids]), np.concatenate([old, vectors]))
        else:
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    def _remove_vectors(self, ids: Iterable[int]) -> None:
        drop = np.array(sorted(ids), dtype=np.int64)
        if not is_approximate(self.index):
            self.index.remove_ids(drop)
            return
        old_ids, old = self._vectors()  # HNSW cannot remove: rebuild from the vectors it keeps
        keep = ~np.isin(old_ids, drop)
        self._rebuild(old_ids[keep], old[keep])

    def _save_index(self) -> None:
        data = _faiss().serialize_index(self.index).tobytes()
        try:
            replace_file(self.folder / INDEX, data, 0o600, durable=True)
        except OSError as exc:
            raise AssistantError(f"cannot save {self.folder / INDEX}: {exc.strerror or exc}") from None

    # --- records ------------------------------------------------------------------------------------

    def _append_records(self, records: list[dict]) -> None:
        path = self.folder / RECORDS
        data = b"".join(json.dumps(r, ensure_ascii=True).encode("ascii") + b"\n" for r in records)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(28, "short write")
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no half record left behind
                raise AssistantError(f"cannot save {path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def _rewrite_records(self) -> None:
        data = b"".join(json.dumps(r, ensure_ascii=True).encode("ascii") + b"\n" for r in self.records.values())
        try:
            replace_file(self.folder / RECORDS, data, 0o600, durable=True)
        except OSError as exc:
            raise AssistantError(f"cannot save {self.folder / RECORDS}: {exc.strerror or exc}") from None

    # --- the public surface -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.records)

    def update(self, add: list[dict] = (), remove: Iterable[int] = (),
               progress: Callable[[int], None] | None = None, *, key: str | None = None,
               drop: Iterable = ()) -> list[int]:
        """Remove records and add new ones ({"text": ..., "kind": ..., ...; "key": what to embed instead of the
        text}); when this returns, both are on disk. Returns the new records' ids.

        Removals by id are for ids just read. A writer that planned its change earlier (others may have written
        since) names records by a field instead: with `key`, every record whose `key` field is in `drop` or
        equals an added record's is removed, whatever its id, so two writers never leave duplicates."""
        add, remove = list(add), set(remove)
        self._create()  # before the embedding work: a folder that cannot be made fails at once
        vectors = self.embedder.encode([embedded_text(r) for r in add], progress=progress) if add else None
        with self._locked():
            self._refresh()
            try:
                return self._apply(add, vectors, remove, key, set(drop))
            except BaseException:
                self._seen = None  # memory may no longer match the disk: re-read next time
                raise

    def _apply(self, add: list[dict], vectors, remove: set, key: str | None, drop: set) -> list[int]:
        if key is not None:
            drop |= {r.get(key) for r in add}
            remove |= {i for i, r in self.records.items() if r.get(key) in drop}
        remove &= self.records.keys()
        if remove:
            for i in remove:
                del self.records[i]
            self._rewrite_records()
            self._remove_vectors(remove)
        if not add:
            if remove:
                self._save_index()
                self._seen = self._stamp()
            return []
        start = self._next_id(self.records, self.index)
        ids = list(range(start, start + len(add)))
        self._mark(start + len(add))
        now = time.time()
        new = [{**r, "id": i, "ts": r.get("ts", now)} for i, r in zip(ids, add)]
        self._add_vectors(vectors, np.array(ids, dtype=np.int64))
        self._save_index()
        self._append_records(new)
        self.records.update((r["id"], r) for r in new)
        self._seen = self._stamp()
        return ids

    def _next_id(self, records: dict, index) -> int:
        """Above every id in use or ever given here (`next_id` keeps the mark): an id is never given twice, so a
        removal planned by id can only hit the record it meant."""
        try:
            mark = int((self.folder / NEXT_ID).read_text())
        except (OSError, ValueError):
            mark = 0
        in_index = index_ids(index).tolist() if index is not None else []
        return max([mark, *(i + 1 for i in records), *(i + 1 for i in in_index)])

    def _mark(self, next_id: int) -> None:
        with contextlib.suppress(OSError):
            replace_file(self.folder / NEXT_ID, str(next_id).encode(), 0o600)

    def append(self, records: list[dict]) -> list[int]:
        """Keep records now and embed them later: the next load finds them without vectors and embeds them (the
        same path that repairs an interrupted save). For writes that must not wait for the embedding model."""
        with self._locked():
            start = self._next_id(self._read_records(), self._read_index())
            self._mark(start + len(records))
            now = time.time()
            new = [{**r, "id": start + n, "ts": r.get("ts", now)} for n, r in enumerate(records)]
            self._append_records(new)
            self._seen = None  # the next search or update reloads, and embeds these
        return [r["id"] for r in new]

    def remove(self, ids: Iterable[int]) -> int:
        """Forget records by id; returns how many there were."""
        ids = set(ids)
        with self._locked():
            self._refresh()
            count = len(ids & self.records.keys())
        self.update(remove=ids)
        return count

    def search(self, query: str | np.ndarray, k: int = 5, where: Callable[[dict], bool] | None = None) -> list[Hit]:
        """The k records nearest in meaning (cosine, best first), optionally only those `where` accepts."""
        if not (self.folder / RECORDS).exists() and not self.records:
            return []  # nothing kept yet: no folder made, no model loaded
        with self._locked():
            self._refresh()
        if not self.records or k <= 0 or self.index is None:
            return []
        vec = self.embedder.encode([query]) if isinstance(query, str) else np.asarray(query, np.float32).reshape(1, -1)
        fetch = k * 4 if where else k
        with self._mutex:
            while True:  # with a filter, fetch more until k pass it or the index is exhausted
                fetch = min(self.index.ntotal, fetch)
                if is_approximate(self.index):
                    _faiss().downcast_index(self.index.index).hnsw.efSearch = max(HNSW_EF_SEARCH, fetch)
                scores, ids = self.index.search(vec, fetch)
                hits = [Hit(float(s), self.records[int(i)]) for s, i in zip(scores[0], ids[0])
                        if i >= 0 and int(i) in self.records and (where is None or where(self.records[int(i)]))]
                if len(hits) >= k or fetch >= self.index.ntotal:
                    return hits[:k]
                fetch *= 4
