"""libcore: the hot paths of dedupe in C (libcore.c, compiled at install through cffi), with a thin Python layer.

    texts -> shingles (5 consecutive tokens) -> MinHash signatures (k 32-bit permutations) -> LSH bands
    texts -> exact hashes (128 bits)

Batch calls run on several threads: cffi releases the GIL around every C call. C error codes become ValueError or
MemoryError. `reference.py` computes the same values in pure Python, and `backend("reference")` swaps it in, which
is how the tests compare the two. If the C extension is missing, the first use says how to build it; there is no
silent fallback to the (hundreds of times slower) reference.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from assistant.errors import AssistantError

DEFAULT_SEED = 1  # the permutations' seed: signatures made with different seeds cannot be compared
THREAD_MIN_DOCS = 64  # below this a batch runs on the calling thread
_pool: ThreadPoolExecutor | None = None


class LibcoreMissing(AssistantError):
    pass


def _c():
    try:
        from assistant.libcore._libcore import ffi, lib
    except ImportError as exc:
        raise LibcoreMissing(
            f"libcore's C extension is not built ({exc}): reinstall with `make install` (or `pip install -e .`); "
            "it needs a C compiler (Debian/Ubuntu: apt-get install gcc python3-dev)") from None
    return ffi, lib


def _check(rc: int, what: str) -> None:
    if rc == -1:
        raise ValueError(f"libcore: {what}: an argument is out of range")
    if rc == -2:
        raise MemoryError(f"libcore: {what}: out of memory")


def as_bytes(text: str | bytes) -> bytes:
    # surrogatepass: JSON allows lone surrogates ("\ud800"); they must hash, not crash, and the same way each time
    return text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")


def _pack(texts: Sequence[str | bytes]) -> tuple[bytes, np.ndarray]:
    data = [as_bytes(t) for t in texts]
    offsets = np.zeros(len(data) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)))
    return b"".join(data), offsets


def _checked_offsets(buf: bytes, offsets) -> np.ndarray:
    """Offsets as C reads them: int64, contiguous, rising, within the buffer (C trusts them)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or not len(offsets) or offsets[0] < 0 or offsets[-1] > len(buf) or \
            (len(offsets) > 1 and (np.diff(offsets) < 0).any()):
        raise ValueError("offsets must rise from 0 or more to at most the buffer's length")
    return offsets


def splitmix64(seed: int):
    state = seed & 0xFFFFFFFFFFFFFFFF
    while True:
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        yield z ^ (z >> 31)


def permutations(num_perm: int, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The k permutations x -> a*x + b (mod 2^32), a odd, drawn from splitmix64(seed)."""
    if num_perm < 1:
        raise ValueError("num_perm must be at least 1")
    draw = splitmix64(seed)
    pairs = [(next(draw) & 0xFFFFFFFF | 1, next(draw) & 0xFFFFFFFF) for _ in range(num_perm)]
    return (np.array([p[0] for p in pairs], dtype=np.uint32), np.array([p[1] for p in pairs], dtype=np.uint32))


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted areas of false positives below the threshold and false negatives
    above it under the S-curve 1 - (1 - s^r)^b: the rule datasketch's MinHashLSH uses, so the two agree."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be between 0 and 1 (exclusive)")
    s_low = np.linspace(0.0, threshold, 1001)
    s_high = np.linspace(threshold, 1.0, 1001)
    best, best_cost = (1, 1), math.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - s_low ** rows) ** bands, s_low)
            fn = np.trapezoid((1 - s_high ** rows) ** bands, s_high)
            cost = fp * fp_weight + fn * (1 - fp_weight)
            if cost < best_cost:
                best, best_cost = (bands, rows), cost
    return best


def min_equal(threshold: float, num_perm: int) -> int:
    """The fewest agreeing positions whose share reaches the threshold (an integer, so C and Python agree)."""
    need = math.ceil(threshold * num_perm - 1e-9)
    return max(0, min(num_perm, need))


class _C:
    """The C backend."""

    name = "c"

    def xxh64(self, data: bytes, seed: int = 0) -> int:
        _, lib = _c()
        return int(lib.lc_xxh64(data, len(data), seed))

    def shingles(self, data: bytes, ngram: int = 5) -> list[int]:
        ffi, lib = _c()
        out = np.empty(max(16, len(data) // 2), dtype=np.uint64)
        n = lib.lc_shingles(data, len(data), ngram, ffi.from_buffer("uint64_t[]", out), len(out))
        _check(n if n < 0 else 0, "shingles")
        if n > len(out):
            out = np.empty(n, dtype=np.uint64)
            lib.lc_shingles(data, len(data), ngram, ffi.from_buffer("uint64_t[]", out), len(out))
        return [int(v) for v in out[:n]]

    def minhash(self, texts: Sequence[bytes], a: np.ndarray, b: np.ndarray, ngram: int = 5) -> np.ndarray:
        return self.minhash_packed(*_pack(texts), a, b, ngram)

    def minhash_packed(self, buf: bytes, offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
                       ngram: int = 5) -> np.ndarray:
        ffi, lib = _c()
        offsets = _checked_offsets(buf, offsets)
        a = np.ascontiguousarray(a, dtype=np.uint32)
        b = np.ascontiguousarray(b, dtype=np.uint32)
        if a.ndim != 1 or a.shape != b.shape or not len(a):
            raise ValueError("a and b must be equally long, non-empty vectors")
        k, n = len(a), len(offsets) - 1
        sigs = np.empty((n, k), dtype=np.uint32)
        cbuf = ffi.from_buffer("uint8_t[]", buf)
        coff = ffi.from_buffer("int64_t[]", offsets)
        ca, cb = ffi.from_buffer("uint32_t[]", a), ffi.from_buffer("uint32_t[]", b)
        csigs = ffi.from_buffer("uint32_t[]", sigs)

        def part(lo: int, hi: int) -> int:
            return lib.lc_minhash_batch(cbuf, coff + lo, hi - lo, ngram, ca, cb, k, csigs + lo * k)

        threads = min(os.cpu_count() or 1, max(1, n // THREAD_MIN_DOCS))
        if threads == 1:
            codes = [part(0, n)]
        else:
            cuts = [n * i // threads for i in range(threads + 1)]
            codes = list(_threads().map(part, cuts[:-1], cuts[1:]))
        for rc in codes:
            _check(rc, "minhash")
        return sigs

    def band_keys(self, sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
        ffi, lib = _c()
        sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
        keys = np.empty((sigs.shape[0], bands), dtype=np.uint64)
        _check(lib.lc_band_keys(ffi.from_buffer("uint32_t[]", sigs), sigs.shape[0], sigs.shape[1], bands, rows,
                                ffi.from_buffer("uint64_t[]", keys)), "band keys")
        return keys

    def exact_hashes(self, texts: Sequence[bytes]) -> np.ndarray:
        return self.exact_packed(*_pack(texts))

    def exact_packed(self, buf: bytes, offsets: np.ndarray) -> np.ndarray:
        ffi, lib = _c()
        offsets = _checked_offsets(buf, offsets)
        out = np.empty((len(offsets) - 1, 2), dtype=np.uint64)
        _check(lib.lc_exact_batch(ffi.from_buffer("uint8_t[]", buf), ffi.from_buffer("int64_t[]", offsets),
                                  len(offsets) - 1, ffi.from_buffer("uint64_t[]", out)), "exact hashes")
        return out

    def LSH(self, num_perm: int, bands: int, rows: int, min_equal: int) -> "_CLSH":
        return _CLSH(num_perm, bands, rows, min_equal)


class _CLSH:
    def __init__(self, num_perm: int, bands: int, rows: int, min_equal: int):
        ffi, lib = _c()
        index = lib.lc_lsh_new(num_perm, bands, rows, min_equal)
        if index == ffi.NULL:
            raise ValueError(f"bad LSH parameters: {bands} bands x {rows} rows, {num_perm} permutations, "
                             f"{min_equal} to agree")
        self._index = ffi.gc(index, lib.lc_lsh_free)
        self.num_perm = num_perm
        self._lock = threading.Lock()  # one call at a time: a call may resize the table another is probing

    def __len__(self) -> int:
        return int(_c()[1].lc_lsh_size(self._index))

    def dedupe(self, sigs: np.ndarray, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        ffi, lib = _c()
        sigs = np.ascontiguousarray(sigs, dtype=np.uint32)
        if sigs.ndim != 2 or sigs.shape[1] != self.num_perm or len(ids) != sigs.shape[0]:
            raise ValueError(f"expected {len(ids)} signatures of {self.num_perm} values, got shape {sigs.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        match = np.empty(len(ids), dtype=np.int64)
        equal = np.empty(len(ids), dtype=np.int32)
        with self._lock:
            rc = lib.lc_lsh_dedupe(self._index, ffi.from_buffer("uint32_t[]", sigs), ffi.from_buffer("int64_t[]", ids),
                                   len(ids), ffi.from_buffer("int64_t[]", match), ffi.from_buffer("int32_t[]", equal))
        _check(rc, "LSH")
        return match, equal


class _Reference:
    """The pure-Python backend (reference.py), for tests and for reading."""

    name = "reference"

    def __getattr__(self, name):
        from assistant.libcore import reference

        return getattr(reference, name)


def _threads() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="libcore")
    return _pool


BACKENDS = {"c": _C(), "reference": _Reference()}


def backend(name: str = "c"):
    """The implementation to use: "c" (the default) or "reference"."""
    if name == "c":
        _c()  # fail now, with the message that says how to build it
    return BACKENDS[name]


class MinHasher:
    """Signatures, band keys and exact hashes with one set of parameters (what dedupe and collect use)."""

    def __init__(self, num_perm: int = 256, ngram: int = 5, seed: int = DEFAULT_SEED, impl: str = "c"):
        if not 1 <= ngram <= 64:
            raise ValueError("ngram must be between 1 and 64")
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        self.a, self.b = permutations(num_perm, seed)
        self.impl = backend(impl)

    def signatures(self, texts: Sequence[str | bytes]) -> np.ndarray:
        return self.impl.minhash([as_bytes(t) for t in texts], self.a, self.b, self.ngram)

    def exact(self, texts: Sequence[str | bytes]) -> np.ndarray:
        return self.impl.exact_hashes([as_bytes(t) for t in texts])

    def both(self, texts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(exact hashes, signatures), encoding the texts once."""
        if self.impl.name != "c":
            return self.exact(texts), self.signatures(texts)
        buf, offsets = _pack(texts)
        return self.impl.exact_packed(buf, offsets), self.impl.minhash_packed(buf, offsets, self.a, self.b, self.ngram)


def jaccard(a: str | bytes, b: str | bytes, ngram: int = 5) -> float:
    """The exact Jaccard similarity of two texts' shingle sets (what the signatures estimate)."""
    impl = backend("c")
    x, y = set(impl.shingles(as_bytes(a), ngram)), set(impl.shingles(as_bytes(b), ngram))
    return len(x & y) / len(x | y) if x or y else 1.0
