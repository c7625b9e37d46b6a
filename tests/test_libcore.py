"""libcore: the C code against its pure-Python reference (hypothesis), against xxHash's published values and
datasketch's parameter rule, and the quality of its Jaccard estimates."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from assistant import libcore

C, REF = libcore.backend("c"), libcore.backend("reference")

# Texts that stress the tokenizer: ASCII words and punctuation, accents, CJK, emoji, control characters, lone
# surrogates (JSON allows them), and very short texts.
ALPHABET = st.sampled_from(list("ab Z_09 .,;:()\n\t-") + ["é", "ß", "日本", "😀", "\x00", "\x7f", "\ud800", "İ"])
TEXTS = st.lists(ALPHABET, max_size=80).map("".join)
BYTES = st.binary(max_size=200)


@pytest.mark.parametrize("data, seed, want", [
    # XXH64 values from the reference implementation (the `xxhash` package), not from this code
    (b"", 0, 0xEF46DB3751D8E999), (b"a", 0, 0xD24EC4F1A98C6E5B), (b"abc", 0, 0x44BC2CF5AD770999),
    (b"", 12345, 0x95584AF7701F808D), (b"abc", 12345, 0x01700E64F6F23509),
    (b"hello world, this is longer than thirty two bytes!!", 0, 0x85BECD516B9FD417),
    (bytes(range(256)), 0, 0x1FACBE8406CD904B), (bytes(range(256)), 12345, 0x90B51DB6250D0213),
])
def test_xxh64_matches_the_published_algorithm(data, seed, want):
    assert C.xxh64(data, seed) == want
    assert REF.xxh64(data, seed) == want


@settings(max_examples=300, deadline=None)
@given(BYTES, st.integers(0, 2**64 - 1))
def test_xxh64_c_and_reference_agree_on_any_bytes(data, seed):
    assert C.xxh64(data, seed) == REF.xxh64(data, seed)


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.integers(1, 7))
@example("", 5)
@example("one", 5)
@example("ÉCOLE école straße 日本語 😀", 2)
def test_shingles_agree(text, ngram):
    data = libcore.as_bytes(text)
    assert C.shingles(data, ngram) == REF.shingles(data, ngram)


def test_tokens_and_shingle_edge_cases():
    assert REF.tokens(b"Foo_bar, BAZ9!") == [b"foo_bar", b"baz9"]
    assert REF.tokens("café über".encode()) == ["café".encode(), "über".encode()]  # UTF-8 stays inside words
    assert C.shingles(b"", 5) == [] and C.shingles(b" ,.; ", 5) == []
    assert len(C.shingles(b"one", 5)) == 1  # fewer tokens than the n-gram: one shingle of them all
    assert len(C.shingles(b"a b c d e f g", 5)) == 3
    assert C.shingles(b"A B C", 2) == C.shingles(b"a  b\nc", 2)  # case and separators do not matter
    assert C.shingles(b"a b c", 2) != C.shingles(b"b a c", 2)  # order does
    with pytest.raises(ValueError):
        C.shingles(b"x", 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=6), st.sampled_from([1, 7, 64, 70]), st.integers(1, 6),
       st.integers(0, 2**32))
def test_signatures_band_keys_and_exact_hashes_agree(texts, num_perm, ngram, seed):
    data = [libcore.as_bytes(t) for t in texts]
    a, b = libcore.permutations(num_perm, seed)
    sigs = C.minhash(data, a, b, ngram)
    assert sigs.shape == (len(texts), num_perm) and sigs.dtype == np.uint32
    assert (sigs == REF.minhash(data, a, b, ngram)).all()
    rows = max(1, num_perm // 3)
    bands = num_perm // rows
    assert (C.band_keys(sigs, bands, rows) == REF.band_keys(sigs, bands, rows)).all()
    assert (C.exact_hashes(data) == REF.exact_hashes(data)).all()


def test_an_empty_text_has_the_empty_signature_and_equal_texts_equal_signatures():
    hasher = libcore.MinHasher(64, 5)
    sigs = hasher.signatures(["", "  ...  ", "Some words here", "some WORDS, here!"])
    assert (sigs[0] == 0xFFFFFFFF).all() and (sigs[1] == sigs[0]).all()
    assert (sigs[2] == sigs[3]).all() and not (sigs[2] == sigs[0]).all()
    exact = hasher.exact(["a", "a", "A"])
    assert (exact[0] == exact[1]).all() and not (exact[0] == exact[2]).all()


def test_batches_on_threads_equal_one_thread(monkeypatch):
    rng = random.Random(3)
    texts = [" ".join(f"w{rng.randrange(500)}" for _ in range(rng.randrange(0, 60))) for _ in range(700)]
    hasher = libcore.MinHasher(128, 5)
    monkeypatch.setattr(libcore.os, "cpu_count", lambda: 4)  # split into 4 parts even on a 1-CPU machine
    threaded = hasher.signatures(texts)
    monkeypatch.setattr(libcore, "THREAD_MIN_DOCS", 10**9)
    assert (threaded == hasher.signatures(texts)).all()
    assert (threaded[:50] == REF.minhash([t.encode() for t in texts[:50]], hasher.a, hasher.b, 5)).all()


def test_the_longest_ngram_agrees():
    text = " ".join(f"t{i % 37}" for i in range(200)).encode()
    assert C.shingles(text, 64) == REF.shingles(text, 64) and len(C.shingles(text, 64)) == 137
    with pytest.raises(ValueError):
        C.shingles(text, 65)


def test_a_large_lsh_index_grows_and_still_agrees():
    """Thousands of signatures: the table is resized several times within and between calls."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**32, size=(1500, 16), dtype=np.uint32)
    copies = base[rng.integers(0, 1500, size=1500)].copy()
    copies[:, :3] = rng.integers(0, 2**32, size=(1500, 3), dtype=np.uint32)  # 13 of 16 agree
    sigs = np.concatenate([base, copies])
    ids = np.arange(len(sigs), dtype=np.int64)
    c_index, ref_index = C.LSH(16, 4, 4, 12), REF.LSH(16, 4, 4, 12)
    for part in (slice(0, 1000), slice(1000, 3000)):
        cm, ce = c_index.dedupe(sigs[part], ids[part])
        rm, re_ = ref_index.dedupe(sigs[part], ids[part])
        assert cm.tolist() == rm.tolist() and ce.tolist() == re_.tolist()
    assert len(c_index) == len(ref_index) and 1500 <= len(c_index) < 3000


def test_offsets_outside_the_buffer_are_refused():
    a, b = libcore.permutations(8)
    with pytest.raises(ValueError, match="offsets"):
        C.minhash_packed(b"abc", np.array([0, 10]), a, b)
    with pytest.raises(ValueError, match="offsets"):
        C.exact_packed(b"abc", np.array([2, 1]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.sampled_from([(8, 2, 4), (16, 4, 4), (12, 5, 2)]),
       st.floats(0.3, 0.95))
def test_the_lsh_index_agrees_with_the_reference(seed, n, shape, threshold):
    num_perm, bands, rows = shape
    rng = np.random.default_rng(seed)
    # few distinct values, so many signatures share bands and the candidate rules are exercised
    sigs = rng.integers(0, 3, size=(n, num_perm), dtype=np.uint32)
    ids = rng.permutation(1000)[:n].astype(np.int64)
    need = libcore.min_equal(threshold, num_perm)
    c_index, ref_index = C.LSH(num_perm, bands, rows, need), REF.LSH(num_perm, bands, rows, need)
    half = n // 2  # two calls: what the first kept must be seen by the second
    for part in (slice(0, half), slice(half, n)):
        cm, ce = c_index.dedupe(sigs[part], ids[part])
        rm, re_ = ref_index.dedupe(sigs[part], ids[part])
        assert cm.tolist() == rm.tolist() and ce.tolist() == re_.tolist()
    assert len(c_index) == len(ref_index)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        C.LSH(16, 5, 4, 8)  # 20 rows > 16 permutations
    index = C.LSH(16, 4, 4, 8)
    with pytest.raises(ValueError, match="signatures of 16"):
        index.dedupe(np.zeros((2, 8), np.uint32), [1, 2])
    with pytest.raises(ValueError):
        C.band_keys(np.zeros((1, 8), np.uint32), 3, 3)
    with pytest.raises(ValueError):
        libcore.MinHasher(16, ngram=0)


@pytest.mark.parametrize("threshold, num_perm", [(0.7, 256), (0.5, 128), (0.85, 64), (0.9, 256)])
def test_band_parameters_follow_datasketch(threshold, num_perm):
    from datasketch.lsh import _optimal_param

    assert libcore.optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_min_equal_is_the_first_count_reaching_the_threshold():
    assert libcore.min_equal(0.7, 256) == 180  # 179/256 = 0.699
    assert libcore.min_equal(0.5, 4) == 2 and libcore.min_equal(0.51, 4) == 3


def test_estimates_are_as_good_as_datasketch():
    """Mean absolute error of the estimated Jaccard against the exact one on pairs of sets of known overlap: a
    weak permutation family would show here."""
    from datasketch import MinHash

    rng = random.Random(7)
    hasher = libcore.MinHasher(256, ngram=1)
    ours, theirs = [], []
    for _ in range(60):
        shared = rng.randrange(20, 400)
        only = rng.randrange(0, 400)
        words = [f"t{rng.getrandbits(40)}" for _ in range(shared + 2 * only)]
        x, y = words[:shared + only], words[:shared] + words[shared + only:]
        truth = libcore.jaccard(" ".join(x), " ".join(y), ngram=1)
        assert truth == pytest.approx(shared / (shared + 2 * only))
        sx, sy = hasher.signatures([" ".join(x), " ".join(y)])
        ours.append(abs(float((sx == sy).mean()) - truth))
        mx, my = MinHash(num_perm=256), MinHash(num_perm=256)
        mx.update_batch([w.encode() for w in x])
        my.update_batch([w.encode() for w in y])
        theirs.append(abs(mx.jaccard(my) - truth))
    assert np.mean(ours) < 0.03  # the standard error at 256 permutations is at most 0.031
    assert np.mean(ours) <= np.mean(theirs) + 0.01


def test_a_missing_extension_says_how_to_build_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "assistant.libcore._libcore", None)  # makes the import fail
    with pytest.raises(libcore.LibcoreMissing, match="C compiler"):
        libcore.backend("c")
    assert libcore.backend("reference").xxh64(b"a") == 0xD24EC4F1A98C6E5B  # the reference still works
