"""libcore in pure Python: the same values as the C code (libcore.h has the definitions), slowly.

The tests run both on random texts and compare; this file is the specification a reader can follow. It works on
bytes (the wrapper encodes text as UTF-8 first), and returns the same numpy shapes as the wrapper.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1
P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727, 1609587929392839161, 9650029242287828579,
                      2870177450012600261)
TOKEN_SEED = 0xA4093822299F31D0
SHINGLE_SEED = 0x243F6A8885A308D3
BAND_SEED = 0x13198A2E03707344
EXACT_SEED2 = 0x9E3779B97F4A7C15
MAX_NGRAM = 64
WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") | frozenset(range(0x80, 0x100))


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * P2) & M64
    return (_rotl(acc, 31) * P1) & M64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64, as the xxHash specification defines it."""
    n, p = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed & M64, (seed - P1) & M64]
        while p <= n - 32:
            for i in range(4):
                v[i] = _round(v[i], int.from_bytes(data[p + 8 * i:p + 8 * i + 8], "little"))
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for lane in v:
            h = ((h ^ _round(0, lane)) * P1 + P4) & M64
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while p + 8 <= n:
        h ^= _round(0, int.from_bytes(data[p:p + 8], "little"))
        h = (_rotl(h, 27) * P1 + P4) & M64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p:p + 4], "little") * P1) & M64
        h = (_rotl(h, 23) * P2 + P3) & M64
        p += 4
    while p < n:
        h ^= (data[p] * P5) & M64
        h = (_rotl(h, 11) * P1) & M64
        p += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    return h ^ (h >> 32)


def fmix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


def tokens(data: bytes) -> list[bytes]:
    """Maximal runs of ASCII letters, digits, '_' and bytes >= 0x80; ASCII letters lowercased."""
    out, current = [], bytearray()
    for c in data:
        if c in WORD:
            current.append(c + 32 if 65 <= c <= 90 else c)
        elif current:
            out.append(bytes(current))
            current = bytearray()
    if current:
        out.append(bytes(current))
    return out


def token_hash(token: bytes) -> int:
    state, full = TOKEN_SEED, len(token) - len(token) % 8
    for p in range(0, full, 8):
        state = fmix64(state ^ int.from_bytes(token[p:p + 8], "little"))
    return fmix64(state ^ int.from_bytes(token[full:], "little") ^ ((len(token) * P5) & M64))


def shingles(data: bytes, ngram: int = 5) -> list[int]:
    if not 1 <= ngram <= MAX_NGRAM:
        raise ValueError(f"ngram must be between 1 and {MAX_NGRAM}")
    hashes = [token_hash(t) for t in tokens(data)]
    if not hashes:
        return []
    width = min(ngram, len(hashes))
    mult = [fmix64((SHINGLE_SEED + p) & M64) | 1 for p in range(width)]
    return [fmix64(SHINGLE_SEED ^ (sum(t * m for t, m in zip(hashes[s:s + width], mult)) & M64))
            for s in range(len(hashes) - width + 1)]


def minhash(texts: Sequence[bytes], a: np.ndarray, b: np.ndarray, ngram: int = 5) -> np.ndarray:
    a_, b_ = [int(v) for v in a], [int(v) for v in b]
    sigs = np.empty((len(texts), len(a_)), dtype=np.uint32)
    for d, data in enumerate(texts):
        xs = {(h ^ (h >> 32)) & M32 for h in shingles(data, ngram)}
        sigs[d] = [min(((ai * x + bi) & M32 for x in xs), default=M32) for ai, bi in zip(a_, b_)]
    return sigs


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    if bands < 1 or rows < 1 or bands * rows > sigs.shape[1]:
        raise ValueError(f"{bands} bands of {rows} rows do not fit {sigs.shape[1]} permutations")
    keys = np.empty((sigs.shape[0], bands), dtype=np.uint64)
    mult = [fmix64((BAND_SEED + i) & M64) | 1 for i in range(rows)]
    salt = [fmix64(BAND_SEED ^ (j + 1)) for j in range(bands)]
    for d, sig in enumerate(sigs.tolist()):
        for j in range(bands):
            total = sum(v * m for v, m in zip(sig[j * rows:(j + 1) * rows], mult)) & M64
            keys[d, j] = fmix64(total ^ salt[j])
    return keys


def exact_hashes(texts: Sequence[bytes]) -> np.ndarray:
    return np.array([[xxh64(t, 0), xxh64(t, EXACT_SEED2)] for t in texts], dtype=np.uint64).reshape(-1, 2)


class LSH:
    """The streaming near-duplicate index (lc_lsh_dedupe's contract)."""

    def __init__(self, num_perm: int, bands: int, rows: int, min_equal: int):
        if bands * rows > num_perm or not 0 <= min_equal <= num_perm:
            raise ValueError("bad LSH parameters")
        self.num_perm, self.bands, self.rows, self.min_equal = num_perm, bands, rows, min_equal
        self.buckets: dict[int, list[int]] = {}
        self.sigs: list[list[int]] = []
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.sigs)

    def dedupe(self, sigs: np.ndarray, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        match = np.full(len(ids), -1, dtype=np.int64)
        equal = np.zeros(len(ids), dtype=np.int32)
        keys = band_keys(sigs, self.bands, self.rows).tolist()
        for d, sig in enumerate(sigs.tolist()):
            candidates = sorted({doc for key in keys[d] for doc in self.buckets.get(key, ())})
            best, best_equal = -1, -1
            for doc in candidates:  # ascending: a tie keeps the earliest
                same = sum(x == y for x, y in zip(sig, self.sigs[doc]))
                if same > best_equal:
                    best, best_equal = doc, same
            if best >= 0 and best_equal >= self.min_equal:
                match[d], equal[d] = self.ids[best], best_equal
                continue
            equal[d] = max(best_equal, 0)
            for key in keys[d]:
                self.buckets.setdefault(key, []).append(len(self.sigs))
            self.sigs.append(sig)
            self.ids.append(int(ids[d]))
        return match, equal
