"""`assistant bench memory`: vector search latency and recall at 10k and 100k real embeddings (FAISS exact,
FAISS HNSW and IVF, numpy brute force), embedding throughput, and the time to index a repository.

The vectors are MiniLM embeddings of real text: chunks of the installed packages' sources (functions, classes,
module code), cut to --seq-len tokens so that 100k of them embed in minutes on a CPU; they are cached under
<home>/runs/bench-memory so a rerun only measures. Random vectors are no stand-in: they have no structure, and
every approximate index loses its recall on them. Queries are held-out chunks of the same kind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from assistant.home import subdir


def _texts(count: int) -> list[str]:
    """Up to `count` chunks of the .py files of the installed packages, in a fixed order."""
    import sysconfig

    from assistant.memory_bank.chunking import chunk_text, read_text

    root = Path(sysconfig.get_paths()["purelib"])
    texts: list[str] = []
    for path in sorted(root.rglob("*.py")):
        text = read_text(path)
        if not text:
            continue
        rel = path.relative_to(root).as_posix()
        texts += [c.text for c in chunk_text(rel, text) if len(c.text.strip()) > 40]
        if len(texts) >= count:
            break
    return texts[:count]


def embeddings(count: int, seq_len: int, out=sys.stdout) -> np.ndarray:
    """`count` unit vectors of real text, cached by count and sequence length."""
    from assistant.memory_bank.embeddings import shared_embedder

    cache = subdir("runs") / "bench-memory" / f"vectors-{count}-{seq_len}.npy"
    if cache.exists():
        return np.load(cache)
    texts = _texts(count)
    if len(texts) < count:
        raise SystemExit(f"only {len(texts)} chunks in the installed packages; ask for fewer (--sizes)")
    embedder = shared_embedder()
    embedder.encode(["warm up"])
    embedder.max_seq_length = seq_len
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    start = time.monotonic()
    with Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("embedding", total=count)
        vectors = embedder.encode(texts, batch_size=128, progress=lambda n: progress.advance(task, n))
    seconds = time.monotonic() - start
    print(f"embedded {count} chunks (first {seq_len} tokens) in {seconds:.0f} s: {count / seconds:.0f} texts/s",
          file=out, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def _latencies(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Top-10 ids of each query, searched one at a time as a REPL turn does, and each search's seconds."""
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None, :]))
        times.append(time.perf_counter() - start)
    return np.array(found), times


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact)]))


def search_table(vectors: np.ndarray, queries: np.ndarray, size: int, out=sys.stdout) -> list[dict]:
    import faiss

    from assistant.memory_bank import store

    base = np.ascontiguousarray(vectors[:size])
    dim = base.shape[1]

    def numpy_search(q):
        scores = base @ q[0]
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    rows = []
    exact, times = _latencies(numpy_search, queries)
    rows.append({"method": "numpy brute force", "build_s": 0.0, "times": times, "recall": 1.0})
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    found, times = _latencies(lambda q: flat.search(q, 10)[1][0], queries)
    rows.append({"method": "faiss flat (exact)", "build_s": 0.0, "times": times, "recall": _recall(found, exact)})
    start = time.monotonic()
    hnsw = faiss.IndexHNSWFlat(dim, store.HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = store.HNSW_EF_CONSTRUCTION
    hnsw.add(base)
    build = time.monotonic() - start
    for ef in sorted({32, 64, store.HNSW_EF_SEARCH, 128}):
        hnsw.hnsw.efSearch = ef
        found, times = _latencies(lambda q: hnsw.search(q, 10)[1][0], queries)
        mark = " *" if ef == store.HNSW_EF_SEARCH else ""
        rows.append({"method": f"faiss HNSW M={store.HNSW_M} efSearch={ef}{mark}", "build_s": build,
                     "times": times, "recall": _recall(found, exact)})
    start = time.monotonic()
    nlist = int(4 * np.sqrt(size))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base)
    ivf.add(base)
    build = time.monotonic() - start
    for nprobe in (8, 32):
        ivf.nprobe = nprobe
        found, times = _latencies(lambda q: ivf.search(q, 10)[1][0], queries)
        rows.append({"method": f"faiss IVF nlist={nlist} nprobe={nprobe}", "build_s": build, "times": times,
                     "recall": _recall(found, exact)})
    print(f"\n{size:,} vectors x {dim} ({base.nbytes / 1e6:.0f} MB), {len(queries)} queries one at a time, top 10:",
          file=out)
    print(f"  {'method':<34} {'p50 ms':>7} {'p95 ms':>7} {'recall@10':>9} {'build s':>8}", file=out)
    chosen = "faiss flat (exact)" if size < store.APPROX_FROM else "the row marked *"
    print(f"  the store uses {chosen} at this size (exact below {store.APPROX_FROM:,} vectors)", file=out)
    for row in rows:
        ms = np.array(row.pop("times")) * 1000
        row.update(size=size, p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)))
        print(f"  {row['method']:<34} {row['p50_ms']:>7.2f} {row['p95_ms']:>7.2f} {row['recall']:>9.3f} "
              f"{row['build_s']:>8.1f}", file=out)
    return rows


def throughput(out=sys.stdout) -> dict:
    """Texts per second for a memory-sized text (a sentence) and a search chunk (up to 256 tokens)."""
    from assistant.memory_bank.embeddings import shared_embedder

    embedder = shared_embedder()
    embedder.encode(["warm up"])
    embedder.max_seq_length = 256
    chunks = _texts(256)
    sentences = [" ".join(c.split()[:16]) for c in chunks]
    embedder.encode(chunks[:64], batch_size=32)  # the first batches of a process are slower: not counted
    result = {}
    for name, texts in (("sentences (about 16 words)", sentences), ("code chunks (up to 256 tokens)", chunks)):
        start = time.monotonic()
        embedder.encode(texts, batch_size=32)
        result[name] = len(texts) / (time.monotonic() - start)
        print(f"  {name:<32} {result[name]:7.1f} texts/s", file=out)
    return result


def index_repository(repo: Path, out=sys.stdout) -> dict:
    """Index a copy of the repository's tracked files from scratch, then again with nothing changed."""
    from assistant.memory_bank.code_index import HybridIndex, update_workspace
    from assistant.memory_bank.embeddings import shared_embedder

    files = subprocess.run(["git", "-C", str(repo), "ls-files"], capture_output=True, text=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "repo"
        for rel in files:
            src = repo / rel
            if src.is_file():
                (copy / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, copy / rel)
        index = HybridIndex(copy / ".assistant" / "index", shared_embedder())
        start = time.monotonic()
        stats = update_workspace(copy, index)
        cold = time.monotonic() - start
        start = time.monotonic()
        update_workspace(copy, index)
        warm = time.monotonic() - start
    print(f"  {stats.files} files, {stats.chunks} chunks: {cold:.1f} s from scratch "
          f"({stats.chunks / cold:.1f} chunks/s), {warm:.2f} s again with nothing changed", file=out)
    return {"files": stats.files, "chunks": stats.chunks, "cold_s": cold, "unchanged_s": warm}


def bench_memory(*, sizes=(10_000, 100_000), queries: int = 200, seq_len: int = 48, repo: Path | None = None,
                 command: str = "assistant bench memory", out=sys.stdout) -> int:
    import faiss

    print(f"{command}\nfaiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", file=out)
    print("\nembedding throughput (all-MiniLM-L6-v2, CPU, batch 32):", file=out)
    result = {"command": command, "throughput": throughput(out)}
    if repo is not None:
        print(f"\nindexing {repo} (tracked files):", file=out)
        result["index_repository"] = index_repository(repo, out)
    vectors = embeddings(max(sizes) + queries, seq_len, out)
    held_out = vectors[-queries:]
    result["search"] = [row for size in sizes for row in search_table(vectors, held_out, size, out)]
    from assistant.charts import Panel, save_run

    largest = [row for row in result["search"] if row["size"] == max(sizes)]
    names = [row["method"].replace("faiss ", "") for row in largest]
    print(file=out)
    save_run("bench-memory", result, f"vector search: {max(sizes):,} real embeddings, {queries} queries, top 10", [
        Panel("p95 latency (ms, log)", names, [row["p95_ms"] for row in largest], fmt="{:.2f}", log=True),
        Panel("recall@10", names, [row["recall"] for row in largest], fmt="{:.3f}", ylim=(0, 1.15))], out)
    return 0

