"""`assistant improve`: one turn of the closed loop. Samples from the audit logs (repair runs whose code passed,
answers the user accepted with /accept) and from `collect` on local sources are deduplicated (step 6),
decontaminated against HumanEval (n-gram overlap, with a report of what went), used to train the current model
(`assistant train`), and the new model is measured against the old on the held-out half of HumanEval
(HumanEval/1, /3, ...: no training step ever sees it). It is promoted (`--model improved`) only if it does better.
Everything goes to <home>/runs/improve/<stamp>/: the datasets, the reports, the model, report.json and report.md."""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.errors import AssistantError

NGRAM = 13  # words (punctuation left out), GPT-3's decontamination length: a copied docstring or solution
# shares many; common code idioms do not (with punctuation counted as tokens, `str) -> list[str]: """ return`
# and `key=lambda x: x[1], reverse=True` matched unrelated library code: measured on 300 site-packages samples)


@dataclass
class ImproveConfig:
    sources: list[str] = field(default_factory=list)
    stack: str = "python"
    max_samples: int = 400
    samples_per_source: int = 20
    use_logs: bool = True
    base_model: str = ""  # default: the promoted model, else the configured one
    steps: int = 100
    lora_r: int = 0
    learning_rate: float = 0.0
    batch_size: int = 4
    block_size: int = 256
    eval_limit: int | None = None  # the first N problems of the held-out half (default: all 82)
    candidates: int = 4
    iters: int = 1
    ngram: int = NGRAM
    out_dir: str = ""


# --- samples from the audit logs ------------------------------------------------------------------------

def _records(path: Path):
    try:
        fh = open(path, "rb")
    except OSError:
        return
    with fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("data"), dict):
                yield record


def _repair_prompt(args: dict) -> str:
    parts = [str(args.get("task") or "").strip(), str(args.get("signature") or "").strip()]
    examples = [str(d) for d in args.get("doctests") or [] if str(d).strip()]
    if examples:
        parts.append("Examples:\n" + "\n".join(f">>> {d}" for d in examples))
    return "\n\n".join(p for p in parts if p)


def audit_samples(logs: Path) -> tuple[list[dict], dict]:
    """Samples from the sessions' logs: each repair tool run whose code passed its examples (the task as the
    instruction, the code as the response), and each turn the user marked with /accept (request, answer)."""
    samples, counts = [], {"repair_passed": 0, "repair_failed": 0, "accepted": 0, "logs": 0}
    for path in sorted(logs.glob("*.jsonl")) if logs.is_dir() else []:
        counts["logs"] += 1
        calls: dict[str, dict] = {}
        verdict: dict | None = None
        turns: dict[tuple[str, int], dict] = {}
        for record in _records(path):
            kind, data, session = record.get("kind"), record["data"], str(record.get("session", ""))
            if kind == "tool_call" and data.get("name") == "repair" and isinstance(data.get("arguments"), dict):
                calls[str(data.get("id"))] = data["arguments"]
            elif kind == "repair":
                verdict = data
            elif kind == "observation" and data.get("name") == "repair":
                args = calls.pop(str(data.get("id")), None)
                if args is not None and data.get("ok") and verdict is not None:
                    if verdict.get("passed"):
                        code = str(data.get("full") or data.get("text") or "")
                        code = re.sub(r"\n# [^\n]*$", "", code.rstrip()).strip()  # the verdict line
                        if code and _repair_prompt(args):
                            samples.append({"instruction": _repair_prompt(args), "response": code + "\n",
                                            "source": f"audit:{session}", "kind": "repair"})
                            counts["repair_passed"] += 1
                    else:
                        counts["repair_failed"] += 1
                verdict = None
            elif kind == "user" and isinstance(data.get("turn"), int):
                turns[(session, data["turn"])] = {"request": str(data.get("text", ""))}
            elif kind == "answer" and turns:
                last = max((k for k in turns if k[0] == session), key=lambda k: k[1], default=None)
                if last is not None:
                    turns[last]["answer"] = str(data.get("text", ""))
            elif kind == "accepted" and isinstance(data.get("turn"), int):
                turn = turns.get((session, data["turn"]))
                if turn and turn.get("answer") and turn["request"].strip():
                    samples.append({"instruction": turn["request"], "response": turn["answer"],
                                    "source": f"audit:{session}", "kind": "accepted"})
                    counts["accepted"] += 1
    return samples, counts


# --- decontamination ------------------------------------------------------------------------------------------

TOKEN = re.compile(r"\w+")


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = TOKEN.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def humaneval_index(n: int) -> dict[tuple[str, ...], str]:
    """Every n-gram of HumanEval's prompts and canonical solutions, to its task id."""
    from assistant.humaneval import problems

    index: dict[tuple[str, ...], str] = {}
    for task_id, problem in problems().items():
        for gram in ngrams(problem["prompt"] + "\n" + problem["canonical_solution"], n):
            index.setdefault(gram, task_id)
    return index


def decontaminate(src: Path, dst: Path, *, n: int = NGRAM, index: dict | None = None) -> dict:
    """Copy src to dst without the samples that share an n-gram with HumanEval; returns the report (what was
    removed, by which task and n-gram)."""
    index = index if index is not None else humaneval_index(n)
    kept, removed = 0, []
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        for number, line in enumerate(fin, 1):
            try:
                sample = json.loads(line)
                text = f"{sample.get('instruction', '')}\n{sample.get('response', '')}"
            except (ValueError, AttributeError):
                continue
            hit = next((gram for gram in ngrams(text, n) if gram in index), None)
            if hit is None:
                fout.write(line if line.endswith(b"\n") else line + b"\n")
                kept += 1
            else:
                removed.append({"line": number, "task_id": index[hit], "ngram": " ".join(hit),
                                "source": sample.get("source", "")})
    tmp.replace(dst)
    return {"ngram": n, "kept": kept, "removed": len(removed), "samples": removed}


# --- promotion ------------------------------------------------------------------------------------------------

def decide(old: dict, new: dict) -> tuple[bool, str]:
    """Promote only on a better agent pass@1 on the same held-out problems; a tie goes to raw pass@1; a tie on
    both keeps the old model."""
    if old.get("done") != new.get("done"):
        return False, f"not comparable: {old.get('done')} against {new.get('done')} problems"
    n = new["done"]
    figures = f"agent {old['agent']}/{n} -> {new['agent']}/{n}, raw {old['raw']}/{n} -> {new['raw']}/{n}"
    if new["agent"] > old["agent"] or (new["agent"] == old["agent"] and new["raw"] > old["raw"]):
        return True, f"better on the held-out half ({figures})"
    return False, f"not better on the held-out half ({figures}); the old model stays"


def promoted_path() -> Path:
    from assistant.home import models_dir

    return models_dir() / "promoted.json"


def current_promoted() -> dict | None:
    try:
        data = json.loads(promoted_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and Path(str(data.get("path", ""))).is_dir() else None


def promote(model_dir: Path, figures: dict, previous: str) -> None:
    path = promoted_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"path": str(model_dir), "previous": previous, "promoted": time.time(), **figures},
                              indent=2))
    tmp.replace(path)


# --- the loop -------------------------------------------------------------------------------------------------

class Stages:
    def __init__(self, total: int, out):
        self.total, self.n, self.out = total, 0, out
        self.times: dict[str, float] = {}
        self.current = ""
        self.mark = time.monotonic()

    def __call__(self, name: str) -> None:
        self.end()
        self.n += 1
        self.current, self.mark = name, time.monotonic()
        print(f"[{self.n}/{self.total}] {name} ...", file=self.out, flush=True)

    def end(self) -> None:
        if self.current:
            self.times[self.current] = round(time.monotonic() - self.mark, 1)
            self.current = ""


def evaluate(settings, model_dir: Path, cfg: ImproveConfig, out) -> dict:
    import dataclasses

    from assistant.humaneval import BenchConfig, bench_humaneval

    summary: dict = {}
    bench = BenchConfig(limit=cfg.eval_limit, iters=cfg.iters, candidates=cfg.candidates, half="heldout")
    code = bench_humaneval(dataclasses.replace(settings, model=str(model_dir)), bench, out=out,
                           command=f"assistant bench humaneval --model {model_dir} (held-out half)", summary=summary)
    if code == 130:
        raise KeyboardInterrupt
    if not summary or summary.get("done") != summary.get("total"):
        raise AssistantError(f"the evaluation of {model_dir} did not finish (exit {code})")
    return {k: summary[k] for k in ("done", "raw", "agent", "raw_pct", "agent_pct", "run_dir")}


def improve(settings, cfg: ImproveConfig, out=None) -> dict:
    from assistant.home import subdir
    from assistant.plugins.dedupe import dedupe_file
    from assistant.plugins.train import TrainConfig, register_trained, resolve_base, train

    out = out or sys.stdout
    if not cfg.sources and not cfg.use_logs:
        raise AssistantError("nothing to learn from: give --source folders, or leave the audit logs on")
    root = Path(cfg.out_dir).expanduser() if cfg.out_dir else subdir("runs") / "improve" / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    promoted = current_promoted()
    base_spec = cfg.base_model or (promoted["path"] if promoted else settings.model)
    stage = Stages(7, out)
    report: dict = {"config": asdict(cfg), "folder": str(root), "base_model": base_spec}

    stage("samples from the audit logs")
    samples, counts = audit_samples(subdir("logs")) if cfg.use_logs else ([], {})
    report["from_logs"] = {**counts, "samples": len(samples)}
    print(f"    {len(samples)} samples ({counts.get('repair_passed', 0)} passed repairs, "
          f"{counts.get('accepted', 0)} accepted answers) from {counts.get('logs', 0)} logs", file=out)

    stage("collect from local sources")
    collected = root / "collected.jsonl"
    if cfg.sources:
        from assistant.plugins.collect import collect

        found = collect(cfg.sources, collected, stack=cfg.stack, max_samples=cfg.max_samples,
                        samples_per_source=cfg.samples_per_source, resume=collected.exists())
        report["collect"] = {"written": found.written, "files": found.files, "rejected": found.rejected}
    else:
        collected.write_text("")
    merged = root / "all.jsonl"
    with open(merged, "w", encoding="utf-8") as fh:
        for sample in samples:
            fh.write(json.dumps(sample) + "\n")
        fh.write(collected.read_text(encoding="utf-8"))
    total = sum(1 for line in merged.open() if line.strip())
    print(f"    {total} samples in all", file=out)

    stage("dedupe (exact and near duplicates of the responses)")
    deduped = root / "deduped.jsonl"
    dd = dedupe_file(merged, deduped, field="response")
    report["dedupe"] = {"before": total, "after": dd.kept, "exact": dd.exact_duplicates, "near": dd.near_duplicates}
    print(f"    {total} -> {dd.kept} ({dd.exact_duplicates} exact, {dd.near_duplicates} near duplicates removed)",
          file=out)

    stage(f"decontaminate against HumanEval ({cfg.ngram}-gram overlap)")
    clean = root / "train.jsonl"
    dec = decontaminate(deduped, clean, n=cfg.ngram)
    (root / "decontamination.json").write_text(json.dumps(dec, indent=2))
    report["decontaminate"] = {k: dec[k] for k in ("ngram", "kept", "removed")}
    print(f"    {dd.kept} -> {dec['kept']} ({dec['removed']} removed; which and why: decontamination.json)", file=out)
    if dec["kept"] == 0:
        raise AssistantError("no sample is left to train on")

    stage(f"train {cfg.steps} steps on {dec['kept']} samples")
    base_dir = resolve_base(base_spec)
    model_dir = root / "model"
    result = train(TrainConfig(data=str(clean), base_model=str(base_dir), out_dir=str(model_dir), steps=cfg.steps,
                               lora_r=cfg.lora_r, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                               block_size=cfg.block_size, run_name=f"improve-{root.name}"))
    if result.interrupted:
        raise KeyboardInterrupt
    report["train"] = {"steps": result.steps, "samples": result.samples, "tokens": result.tokens,
                       "seconds": round(result.seconds, 1), "first_loss": result.first_loss,
                       "train_loss": result.train_loss, "eval_loss_before": result.eval_loss_before,
                       "eval_loss": result.eval_loss}

    stage("held-out half of HumanEval: the old model")
    old = evaluate(settings, base_dir, cfg, out)
    stage("held-out half of HumanEval: the new model")
    new = evaluate(settings, model_dir, cfg, out)
    stage.end()
    better, why = decide(old, new)
    report.update(heldout_old=old, heldout_new=new, promoted=better, why=why, stage_seconds=stage.times)
    info = json.loads((model_dir / "train_info.json").read_text())
    info.update(agent_pass=new["agent"] / new["done"], raw_pass=new["raw"] / new["done"])
    register_trained(model_dir, info)
    if better:
        promote(model_dir, {"agent_pass": info["agent_pass"], "raw_pass": info["raw_pass"], "heldout": new["done"]},
                str(base_dir))
    (root / "report.json").write_text(json.dumps(report, indent=2, default=str))
    text = render(report)
    (root / "report.md").write_text(text + "\n")
    print("\n" + text, file=out)
    return report


def render(r: dict) -> str:
    old, new, t = r["heldout_old"], r["heldout_new"], r["train"]
    n = new["done"]
    rows = [
        f"improve: one loop iteration in {r['folder']}",
        "",
        "| stage | figure |",
        "|---|---|",
        f"| samples from the audit logs | {r['from_logs'].get('samples', 0)} |",
        f"| samples in all (logs + collect) | {r['dedupe']['before']} |",
        f"| after dedupe | {r['dedupe']['after']} ({r['dedupe']['exact']} exact, {r['dedupe']['near']} near removed) |",
        f"| after decontamination ({r['decontaminate']['ngram']}-gram) | {r['decontaminate']['kept']} "
        f"({r['decontaminate']['removed']} removed) |",
        f"| training | {t['steps']} steps, {t['tokens']:,} tokens, {t['seconds'] / 60:.1f} min; loss "
        f"{_f(t['first_loss'])} -> {_f(t['train_loss'])}; held-out loss {_f(t['eval_loss_before'])} -> "
        f"{_f(t['eval_loss'])} |",
        f"| held-out HumanEval raw pass@1 | {old['raw']}/{n} ({old['raw_pct']:.1f}%) -> {new['raw']}/{n} "
        f"({new['raw_pct']:.1f}%) |",
        f"| held-out HumanEval agent pass@1 | {old['agent']}/{n} ({old['agent_pct']:.1f}%) -> {new['agent']}/{n} "
        f"({new['agent_pct']:.1f}%) |",
        "",
        f"{'PROMOTED' if r['promoted'] else 'not promoted'}: {r['why']}",
        "stage times (s): " + ", ".join(f"{k} {v}" for k, v in r.get("stage_seconds", {}).items()),
    ]
    return "\n".join(rows)


def _f(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"
