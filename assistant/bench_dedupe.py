"""`assistant bench dedupe`: libcore against datasketch on the same corpus, parameters and keep-first rule.

The corpus is real code: chunks (functions, classes, module code) of the installed packages' sources, which hold
natural near duplicates (vendored copies, generated code), plus planted ones: copies of earlier chunks with an
identifier renamed, a line dropped and a comment added, put at random later positions.

Both sides do the same work per document: shingle (the same 5-token shingles), sign with 256 permutations, look
the signature up in an LSH index of the documents kept so far (the same bands and rows), verify candidates by the
estimated Jaccard similarity, and keep the document if none reaches the threshold. Exact repeats are removed
first on both sides. Quality is measured on a random sample of documents against the exact Jaccard similarity of
shingle sets (every document, unless --sample N): a document truly is a near duplicate when some earlier document
reaches the threshold.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from assistant.home import subdir

TOKEN = re.compile(rb"[A-Za-z0-9_\x80-\xff]+")  # libcore's token rule (libcore.h), for datasketch's side


def corpus(count: int, plant: float, seed: int = 0) -> tuple[list[str], int]:
    """`count` documents, `plant` of them edited copies of earlier ones; returns (texts, planted)."""
    from assistant.bench_memory import _texts

    rng = random.Random(seed)
    planted = int(count * plant)
    texts = _texts(count - planted)
    if len(texts) < count - planted:
        raise SystemExit(f"only {len(texts)} chunks in the installed packages; ask for fewer (--docs)")
    for _ in range(planted):
        at = rng.randrange(1, len(texts) + 1)
        texts.insert(at, _edit(texts[rng.randrange(at)], rng))
    return texts, planted


def _edit(text: str, rng: random.Random) -> str:
    words = re.findall(r"[A-Za-z_]\w{3,}", text)
    if words:
        text = re.sub(rf"\b{re.escape(rng.choice(words))}\b", f"renamed_{rng.randrange(1000)}", text)
    lines = text.splitlines()
    if len(lines) > 3:
        del lines[rng.randrange(len(lines))]
    lines.insert(rng.randrange(len(lines) + 1), "# " + " ".join(rng.sample(["note", "fix", "todo", "see", "why",
                                                                           "here", "keep", "this"], 4)))
    return "\n".join(lines)


def shingle_strings(text: str, ngram: int) -> set[bytes]:
    tokens = TOKEN.findall(text.encode("utf-8", "surrogatepass").lower())
    if not tokens:
        return set()
    width = min(ngram, len(tokens))
    return {b" ".join(tokens[i:i + width]) for i in range(len(tokens) - width + 1)}


def run_libcore(texts: list[str], threshold: float, num_perm: int, ngram: int, bands: int, rows: int,
                threads: bool = True) -> tuple[np.ndarray, float]:
    """kept-for per document (-1: kept), seconds."""
    from assistant import libcore

    saved = libcore.THREAD_MIN_DOCS
    libcore.THREAD_MIN_DOCS = saved if threads else 10**12
    try:
        start = time.perf_counter()
        hasher = libcore.MinHasher(num_perm, ngram)
        index = hasher.impl.LSH(num_perm, bands, rows, libcore.min_equal(threshold, num_perm))
        result = np.full(len(texts), -1, dtype=np.int64)
        first: dict[int, int] = {}
        for lo in range(0, len(texts), 8192):
            batch = texts[lo:lo + 8192]
            fresh = []
            exact, sigs = hasher.both(batch)
            for i, (hi, lo_) in enumerate(exact.tolist(), lo):
                key = hi << 64 | lo_
                if key in first:
                    result[i] = first[key]
                else:
                    first[key] = i
                    fresh.append(i)
            if fresh:
                match, _ = index.dedupe(sigs[np.array(fresh) - lo], np.array(fresh, dtype=np.int64))
                result[fresh] = match
        return result, time.perf_counter() - start
    finally:
        libcore.THREAD_MIN_DOCS = saved


def run_datasketch(texts: list[str], threshold: float, num_perm: int, ngram: int, bands: int, rows: int,
                   progress=None) -> tuple[np.ndarray, float]:
    import hashlib

    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    kept: dict[int, MinHash] = {}
    result = np.full(len(texts), -1, dtype=np.int64)
    first: dict[bytes, int] = {}
    for i, text in enumerate(texts):
        if progress and i % 500 == 0:
            progress(i)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if key in first:
            result[i] = first[key]
            continue
        first[key] = i
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingle_strings(text, ngram)))
        best, best_sim = -1, -1.0
        for j in sorted(lsh.query(m)):
            sim = m.jaccard(kept[j])
            if sim > best_sim:
                best, best_sim = j, sim
        if best >= 0 and best_sim >= threshold:
            result[i] = best
        else:
            lsh.insert(i, m)
            kept[i] = m
    return result, time.perf_counter() - start


def truth_for(texts: list[str], sample: list[int], threshold: float, ngram: int) -> dict[int, bool]:
    """For each sampled document: does an earlier document reach the threshold in exact Jaccard similarity?
    Through an inverted index (sorted shingle hashes with their documents), so only documents sharing a shingle
    are compared."""
    from assistant import libcore

    impl = libcore.backend()
    sets = [np.unique(np.array(impl.shingles(libcore.as_bytes(t), ngram), dtype=np.uint64)) for t in texts]
    sizes = np.array([len(s) for s in sets])
    keys = np.concatenate(sets)
    docs = np.repeat(np.arange(len(texts)), sizes)
    order = np.argsort(keys, kind="stable")
    keys, docs = keys[order], docs[order]
    truth = {}
    for i in sample:
        if sizes[i] == 0:
            truth[i] = any(sizes[j] == 0 for j in range(i))
            continue
        lo, hi = np.searchsorted(keys, sets[i], "left"), np.searchsorted(keys, sets[i], "right")
        others = np.concatenate([docs[a:b] for a, b in zip(lo, hi)])
        others = others[others < i]
        if not len(others):
            truth[i] = False
            continue
        shared = np.bincount(others)
        ids = np.nonzero(shared)[0]
        jac = shared[ids] / (sizes[i] + sizes[ids] - shared[ids])
        truth[i] = bool((jac >= threshold - 1e-12).any())
    return truth


def scores(result: np.ndarray, truth: dict[int, bool]) -> dict:
    tp = sum(1 for i, t in truth.items() if t and result[i] >= 0)
    fp = sum(1 for i, t in truth.items() if not t and result[i] >= 0)
    fn = sum(1 for i, t in truth.items() if t and result[i] < 0)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(f1, 4)}


def bench_dedupe(*, docs: int = 50_000, plant: float = 0.05, sample: int | None = None, threshold: float = 0.7,
                 num_perm: int = 256, ngram: int = 5, datasketch: bool = True, command: str = "",
                 out=sys.stdout) -> int:
    from assistant import libcore

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    bands, rows = libcore.optimal_bands(threshold, num_perm)
    start = time.perf_counter()
    texts, planted = corpus(docs, plant)
    mb = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    say(f"corpus: {len(texts):,} documents ({planted:,} planted near copies), {mb:.1f} MB of code "
        f"({time.perf_counter() - start:.1f} s to build); threshold {threshold}, {num_perm} permutations = "
        f"{bands} bands x {rows} rows, {ngram}-token shingles")
    results, rows_out = {}, []
    run_libcore(texts[:5000], threshold, num_perm, ngram, bands, rows)  # warm-up: thread pool, first allocations
    for name, threads in ((f"libcore ({os.cpu_count()} threads)", True), ("libcore (1 thread)", False)):
        runs = [run_libcore(texts, threshold, num_perm, ngram, bands, rows, threads=threads) for _ in range(3)]
        result, seconds = runs[0][0], float(np.median([s for _, s in runs]))  # the same result every run
        results[name] = (result, seconds)
        say(f"{name}: {seconds:.2f} s (median of 3: {', '.join(f'{s:.2f}' for _, s in runs)}), "
            f"{len(texts) / seconds:,.0f} docs/s, {int((result >= 0).sum()):,} removed")
    with tempfile.TemporaryDirectory() as tmp:  # the whole command, JSON reading and writing included
        from assistant.plugins.dedupe import dedupe_file

        src = Path(tmp) / "corpus.jsonl"
        with open(src, "w", encoding="utf-8", errors="surrogatepass") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        report = dedupe_file(src, Path(tmp) / "out.jsonl")
        say(f"`assistant dedupe` on the corpus as JSONL: {report.seconds:.2f} s, "
            f"{len(texts) / report.seconds:,.0f} docs/s, {report.exact_duplicates + report.near_duplicates:,} removed")
        end_to_end = report.seconds
    if datasketch:
        try:
            import datasketch as _  # noqa: F401
        except ImportError:
            raise SystemExit("datasketch is not installed: pip install datasketch (or `make install`)") from None

        def progress(i):
            if getattr(out, "isatty", lambda: False)():
                print(f"\rdatasketch: {i:,}/{len(texts):,}", end="", file=out, flush=True)

        result, seconds = run_datasketch(texts, threshold, num_perm, ngram, bands, rows, progress=progress)
        results["datasketch"] = (result, seconds)
        say(f"\rdatasketch {_version()}: {seconds:.2f} s, {len(texts) / seconds:,.0f} docs/s, "
            f"{int((result >= 0).sum()):,} removed")
    rng = random.Random(1)
    chosen = sorted(rng.sample(range(len(texts)), min(sample or len(texts), len(texts))))
    start = time.perf_counter()
    truth = truth_for(texts, chosen, threshold, ngram)
    say(f"exact Jaccard truth for {len(chosen):,} documents: {sum(truth.values()):,} are near duplicates "
        f"of an earlier one ({time.perf_counter() - start:.1f} s)")
    summary = {"command": command, "docs": len(texts), "planted": planted, "megabytes": round(mb, 2),
               "threshold": threshold, "num_perm": num_perm, "ngram": ngram, "bands": bands, "rows": rows,
               "dedupe_command_seconds": round(end_to_end, 3), "sample": len(chosen), "truly_duplicate_in_sample": sum(truth.values()), "runs": {}}
    say(f"\n| implementation | seconds | docs/s | removed | precision | recall | F1 |\n|---|---|---|---|---|---|---|")
    for name, (result, seconds) in results.items():
        s = scores(result, truth)
        summary["runs"][name] = {"seconds": round(seconds, 3), "docs_per_second": round(len(texts) / seconds, 1),
                                 "removed": int((result >= 0).sum()), **s}
        say(f"| {name} | {seconds:.2f} | {len(texts) / seconds:,.0f} | {int((result >= 0).sum()):,} | "
            f"{s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} |")
    if "datasketch" in results:
        ds = results["datasketch"][1]
        for name, (_, seconds) in results.items():
            if name != "datasketch":
                summary["runs"][name]["speedup_vs_datasketch"] = round(ds / seconds, 1)
                say(f"{name}: {ds / seconds:.1f}x datasketch's throughput")
        agree = float(((results["datasketch"][0] >= 0) == (next(iter(results.values()))[0] >= 0)).mean())
        summary["same_decision_share"] = round(agree, 4)
        say(f"the same keep/drop decision on {agree:.2%} of documents")
    path = subdir("runs") / "bench-dedupe" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
    chart(path.with_suffix(".png"), summary)
    say(f"\nresults: {path} (chart: {path.with_suffix('.png').name})\ncommand: {command}")
    return 0


def chart(path: Path, summary: dict) -> None:
    """Throughput (log scale) and F1 of each implementation, side by side."""
    from assistant.charts import Panel, save_chart

    runs = summary["runs"]
    names = list(runs)
    colors = ["#1f77b4", "#6baed6", "#9e9e9e"][: len(names)]
    rates = [runs[n]["docs_per_second"] for n in names]
    save_chart(path, f"dedupe: {summary['docs']:,} documents, threshold {summary['threshold']}, "
               f"{summary['num_perm']} permutations", [
                   Panel("documents / s (log)", names, rates, fmt="{:,.0f}", log=True, colors=colors,
                         ylim=(100, max(rates) * 3)),
                   Panel("F1 against exact Jaccard", names, [runs[n]["f1"] for n in names], fmt="{:.4f}",
                         colors=colors, ylim=(0, 1.1))])


def _version() -> str:
    import importlib.metadata

    return importlib.metadata.version("datasketch")
