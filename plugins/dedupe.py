"""dedupe: exact and near-duplicate removal from a JSONL dataset, keeping the first occurrence.

    assistant dedupe IN.jsonl OUT.jsonl [--field text --threshold 0.7 --num-perm 256 --ngram 5 --exact-only]

The input is streamed in batches. Each document is first hashed whole (128 bits): a repeat of earlier content is an
exact duplicate. The rest get MinHash signatures over 5-token shingles (libcore, in C, on all cores) and go through
an LSH index of the documents kept so far: a document whose signature agrees with a kept one in at least
`threshold` of its positions (the estimated Jaccard similarity) is a near duplicate of it and is dropped. So the
output holds no two documents estimated as similar as the threshold, and each dropped document names the kept one
it duplicates: the report's clusters. Malformed lines (not JSON, not an object, no such text field) are counted and
listed in the report, and passed through unchanged with --keep-malformed; they never vanish unmentioned.

The output is written to a temporary file and renamed at the end, so OUT may be IN and Ctrl-C leaves both as they
were. Also the `dedupe` tool, and used by `collect --dedupe`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from assistant.errors import AssistantError, ToolError
from assistant.hookspecs import hookimpl
from assistant.tools import requires_approval
from assistant.workspace import replace_file

BATCH = 8192  # documents per batch: enough for the C calls to use every core
EMPTY = 0xFFFFFFFF  # every value of the signature of a text with no shingles
MALFORMED_EXAMPLES = 20  # malformed lines listed in the report (all are counted)


@dataclass
class DedupeReport:
    input: str
    output: str
    field: str
    threshold: float
    num_perm: int
    ngram: int
    bands: int = 0
    rows: int = 0
    exact_only: bool = False
    lines: int = 0  # non-blank lines read
    documents: int = 0  # lines that held a text to compare
    kept: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    malformed: int = 0
    malformed_examples: list = field(default_factory=list)  # {"line", "reason"}
    blank_lines: int = 0
    seconds: float = 0.0
    clusters: dict = field(default_factory=dict)  # kept line -> [{"line", "kind", "similarity"}]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["clusters"] = [{"kept": kept, "size": len(dups) + 1, "duplicates": dups}
                            for kept, dups in sorted(self.clusters.items())]
        return {"v": 1, **data}

    def summary(self) -> str:
        how = "exact only" if self.exact_only else \
            f"threshold {self.threshold:g}, {self.num_perm} permutations = {self.bands} bands x {self.rows} rows"
        text = (f"kept {self.kept:,} of {self.documents:,} documents: {self.exact_duplicates:,} exact and "
                f"{self.near_duplicates:,} near duplicates removed in {len(self.clusters):,} clusters ({how}; "
                f"{self.seconds:.1f} s)")
        if self.malformed:
            first = self.malformed_examples[0]
            text += f"\n{self.malformed:,} malformed lines (first: line {first['line']}: {first['reason']})"
        return text


def text_of(record, path: list[str]):
    """The field a dotted path names (`messages.0.content`), or a reason it is not a text."""
    value = record
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None, f"no field {'.'.join(path)!r}"
    if not isinstance(value, str):
        return None, f"field {'.'.join(path)!r} is {type(value).__name__}, not a string"
    return value, None


def parse_line(raw: bytes, path: list[str]):
    """(text, None) for a usable line, (None, reason) for a malformed one."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError as exc:
        return None, f"invalid JSON ({exc})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"
    if not isinstance(record, dict):
        return None, f"not a JSON object ({type(record).__name__})"
    return text_of(record, path)


def check_params(threshold: float, num_perm: int, ngram: int) -> None:
    if not 0.0 < threshold < 1.0:
        raise AssistantError(f"--threshold must be between 0 and 1 (exclusive), not {threshold:g}")
    if not 2 <= num_perm <= 4096:
        raise AssistantError(f"--num-perm must be between 2 and 4096, not {num_perm}")
    if not 1 <= ngram <= 64:
        raise AssistantError(f"--ngram must be between 1 and 64, not {ngram}")


def dedupe_file(in_path: str | os.PathLike, out_path: str | os.PathLike, *, field: str = "text",
                threshold: float = 0.7, num_perm: int = 256, ngram: int = 5, exact_only: bool = False,
                keep_malformed: bool = False, report_path: str | os.PathLike | None = None,
                progress: Callable[[int], None] | None = None, impl: str = "c") -> DedupeReport:
    """Deduplicate IN into OUT (they may be the same file); write the JSON report (default OUT.report.json) and
    return it. `progress(n)` is called with the bytes read since its last call."""
    from assistant import libcore

    check_params(threshold, num_perm, ngram)
    src, dst = Path(in_path), Path(out_path)
    if not src.is_file():
        raise AssistantError(f"{src}: no such file")
    if dst.is_symlink():  # write what the link points at; the link stays
        dst = dst.resolve()
    report_file = Path(report_path) if report_path else dst.with_name(dst.name + ".report.json")
    report = DedupeReport(str(src), str(dst), field, threshold, num_perm, ngram, exact_only=exact_only)
    hasher = libcore.MinHasher(num_perm, ngram, impl=impl)
    lsh = None
    if not exact_only:
        report.bands, report.rows = libcore.optimal_bands(threshold, num_perm)
        lsh = hasher.impl.LSH(num_perm, report.bands, report.rows, libcore.min_equal(threshold, num_perm))
    state = _State(report)
    path = field.split(".")
    start = time.monotonic()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    from concurrent.futures import ThreadPoolExecutor

    # One worker hashes, looks up and writes batch i (in C, without the GIL) while this thread parses batch i+1.
    worker, pending = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dedupe"), None
    try:
        with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
            def submit(batch):
                nonlocal pending
                if pending is not None:
                    pending.result()
                pending = worker.submit(state.run, batch, hasher, lsh, writer)

            batch: list[tuple[int, bytes, str | None]] = []  # (line number, raw line, text or None)
            for number, raw in enumerate(reader, 1):
                if progress:
                    progress(len(raw))
                if not raw.strip():
                    report.blank_lines += 1
                    continue
                report.lines += 1
                text, reason = parse_line(raw, path)
                if reason:
                    report.malformed += 1
                    if len(report.malformed_examples) < MALFORMED_EXAMPLES:
                        report.malformed_examples.append({"line": number, "reason": reason})
                    if not keep_malformed:
                        continue
                batch.append((number, raw if raw.endswith(b"\n") else raw + b"\n", text))
                if len(batch) >= BATCH:
                    submit(batch)
                    batch = []
            submit(batch)
            pending.result()
            writer.flush()
            os.fsync(writer.fileno())
        report.seconds = round(time.monotonic() - start, 3)
        # The report first: once OUT is replaced, the run has happened and nothing may fail after it.
        replace_file(report_file, (json.dumps(report.to_dict(), indent=1) + "\n").encode("utf-8"))
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(dst.stat().st_mode) if dst.exists() else 0o644)  # not mkstemp's 0600
        os.replace(tmp, dst)
    except BaseException:
        worker.shutdown(wait=True, cancel_futures=True)  # its last write fails on the closed file; then it goes
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        worker.shutdown(wait=False)
    return report


class _State:
    """What a dedupe run remembers between batches: each exact content's first line and each dropped line's
    kept line (so an exact repeat of a dropped document joins the same cluster)."""

    def __init__(self, report: DedupeReport):
        self.report = report
        self.first_of: dict[int, int] = {}  # 128-bit exact hash -> the first line with that content
        self.kept_for: dict[int, int] = {}  # dropped line -> kept line

    def root(self, line: int) -> int:
        return self.kept_for.get(line, line)

    def run(self, batch: list, hasher, lsh, writer) -> None:
        import numpy as np

        docs = [(n, raw, text) for n, raw, text in batch if text is not None]
        if not docs:
            writer.write(b"".join(raw for _, raw, _ in batch))
            return
        self.report.documents += len(docs)
        texts = [text for _, _, text in docs]
        if lsh is None:
            exact, sigs = hasher.exact(texts), None
        else:  # signatures for all: the few exact repeats cost less than encoding the texts twice
            exact, sigs = hasher.both(texts)
        first = []  # per document: the earlier line with the same content, or None
        for (number, _, _), (hi, lo) in zip(docs, exact.tolist()):
            key = hi << 64 | lo
            first.append(self.first_of.get(key))
            if first[-1] is None:
                self.first_of[key] = number
        fresh = [i for i, f in enumerate(first) if f is None]
        near: dict[int, tuple[int, float]] = {}
        if lsh is not None:
            # A text without a single word has the empty signature: it can repeat exactly, never nearly.
            fresh = [i for i in fresh if sigs[i, 0] != EMPTY or (sigs[i] != EMPTY).any()]
        if lsh is not None and fresh:
            numbers = [docs[i][0] for i in fresh]
            match, equal = lsh.dedupe(sigs[fresh], np.array(numbers, dtype=np.int64))
            for number, m, e in zip(numbers, match.tolist(), equal.tolist()):
                if m >= 0:
                    near[number] = (m, round(e / hasher.num_perm, 4))
        dropped: set[int] = set()
        for (number, _, _), f in zip(docs, first):
            if f is not None:
                kept, kind, similarity = self.root(f), "exact", 1.0
                self.report.exact_duplicates += 1
            elif number in near:
                kept, similarity = near[number]
                kind = "near"
                self.report.near_duplicates += 1
            else:
                continue
            self.kept_for[number] = kept
            self.report.clusters.setdefault(kept, []).append({"line": number, "kind": kind,
                                                              "similarity": similarity})
            dropped.add(number)
        self.report.kept += len(docs) - len(dropped)
        writer.write(b"".join(raw for number, raw, _ in batch if number not in dropped))


def dedupe_command(args, settings) -> int:
    """`assistant dedupe`: the CLI entry."""
    import sys

    from assistant.commands import progress_bar

    src = Path(args.input).expanduser()
    size = src.stat().st_size if src.is_file() else 0
    with progress_bar("dedupe", total=size, unit="bytes") as advance:
        report = dedupe_file(src, Path(args.output).expanduser(), field=args.field, threshold=args.threshold,
                             num_perm=args.num_perm, ngram=args.ngram, exact_only=args.exact_only,
                             keep_malformed=args.keep_malformed, report_path=args.report, progress=advance)
    print(report.summary())
    print(f"wrote {report.output}; report: {args.report or report.output + '.report.json'}", file=sys.stderr)
    return 0


def add_parser(sub, shared) -> None:
    import argparse

    p = sub.add_parser(
        "dedupe", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="remove exact and near-duplicate documents from a JSONL file (MinHash + LSH, in C)",
        description="Keep the first occurrence of each document: exact repeats (128-bit content hash) and near\n"
        "duplicates (MinHash over word 5-grams, estimated Jaccard >= --threshold against a document already\n"
        "kept) are dropped. Writes OUT (which may be IN) and a JSON report of clusters and counts beside it.\n"
        "Malformed lines are counted and listed in the report (and kept with --keep-malformed).",
        epilog="examples:\n"
        "  assistant dedupe data.jsonl clean.jsonl\n"
        "  assistant dedupe samples.jsonl samples.jsonl --field response        in place\n"
        "  assistant dedupe chats.jsonl out.jsonl --field messages.1.content    a nested field\n"
        "  assistant dedupe big.jsonl out.jsonl --exact-only                    exact repeats only (faster)\n"
        "  assistant dedupe code.jsonl out.jsonl --threshold 0.85 --num-perm 128 --ngram 3")
    add_arguments(p)


def add_arguments(p) -> None:
    p.add_argument("input", metavar="IN", help="a JSONL file, one JSON object per line")
    p.add_argument("output", metavar="OUT", help="where the kept lines go (may be IN)")
    p.add_argument("--field", default="text", help="the text to compare; a dotted path for nested fields "
                   "(default: text)")
    p.add_argument("--threshold", type=float, default=0.7, help="estimated Jaccard similarity at which a document "
                   "is a near duplicate (default 0.7)")
    p.add_argument("--num-perm", type=int, default=256, help="MinHash permutations (default 256)")
    p.add_argument("--ngram", type=int, default=5, help="tokens per shingle (default 5)")
    p.add_argument("--exact-only", action="store_true", help="only remove exact repeats")
    p.add_argument("--keep-malformed", action="store_true", help="pass malformed lines through (they are still "
                   "reported)")
    p.add_argument("--report", metavar="FILE", help="the JSON report (default OUT.report.json)")


@requires_approval
def dedupe(input: str, output: str, field: str = "text", threshold: float = 0.7, exact_only: bool = False,
           context=None) -> str:
    """Remove duplicate records from a JSONL dataset.

    Args:
        input: The JSONL file to read, relative to the workspace.
        output: Where to write the kept records (may be the input); a report goes beside it.
        field: The JSON field holding the text to compare.
        threshold: Estimated Jaccard similarity (0-1) at which two texts count as near duplicates.
        exact_only: Only remove exact repeats.
    """
    src = context.workspace.resolve(input)
    dst = context.workspace.resolve(output, for_write=True)
    report_file = context.workspace.resolve(str(dst.with_name(dst.name + ".report.json")), for_write=True)
    if context.undo:
        context.undo.before_paths("dedupe", [dst, report_file])
    try:
        report = dedupe_file(src, dst, field=field, threshold=threshold, exact_only=exact_only,
                             report_path=report_file)
    except AssistantError as exc:
        raise ToolError(str(exc)) from None
    lines = [report.summary()]
    for kept, dups in sorted(report.clusters.items(), key=lambda kv: -len(kv[1]))[:3]:
        lines.append(f"line {kept} has {len(dups)} duplicates (lines "
                     f"{', '.join(str(d['line']) for d in dups[:5])}{'...' if len(dups) > 5 else ''})")
    lines.append(f"wrote {output}; report: {report_file.name}")
    return "\n".join(lines)


def dedupe_slash(args: str, session) -> str:
    """/dedupe IN OUT [--field F --threshold T --num-perm N --ngram N --exact-only --keep-malformed]: paths are
    relative to the workspace."""
    import argparse
    import io
    import shlex

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # a message for the REPL, not an exit
            raise ValueError(message)

    parser = Parser(prog="/dedupe", add_help=False)
    add_arguments(parser)
    try:
        ns = parser.parse_args(shlex.split(args))
    except ValueError as exc:
        usage = io.StringIO()
        parser.print_usage(usage)
        return f"{exc}\n{usage.getvalue().strip()}"
    root = Path(session.workspace.root)
    out = root / Path(ns.output).expanduser()
    report = dedupe_file(root / Path(ns.input).expanduser(), out, field=ns.field, threshold=ns.threshold,
                         num_perm=ns.num_perm, ngram=ns.ngram, exact_only=ns.exact_only,
                         keep_malformed=ns.keep_malformed, report_path=root / ns.report if ns.report else None)
    return f"{report.summary()}\nwrote {out}; report: {ns.report or str(out) + '.report.json'}"


@hookimpl
def register_tools(register):
    register(dedupe)


@hookimpl
def register_commands(register):
    register("dedupe", dedupe_slash, "remove exact and near-duplicate lines from a JSONL file: /dedupe IN OUT "
             "[--field F --threshold T --exact-only]")
