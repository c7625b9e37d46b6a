"""`assistant optimize`: compile the repair loop's prompts as a DSPy program against the visible-example pass rate.

Tasks come from the training half of HumanEval (HumanEval/0, /2, ...: never the held-out half the benchmark and
`assistant improve` measure on) or from a JSONL file (stubs, tasks in words, or `assistant collect` samples
whose functions have doctests). Only the examples visible in each stub score a candidate; HumanEval's hidden
tests are not read. A part of the tasks (--val) is kept aside and both the default and the compiled program are
scored on it, so the file says whether compiling helped on tasks it did not see.

Optimizers (DSPy's own):
- bootstrap: BootstrapFewShot. Runs the program on the training tasks and keeps the traces that pass every
  visible example as few-shot demonstrations (--demos per step). Cheap: one pass over the tasks.
- mipro: MIPROv2. Proposes instructions (with --prompt-model, default the same model) and demo sets, and
  searches them with Optuna over --trials minibatch evaluations.
- gepa: GEPA. Reflects on failures (the failure summary is its feedback) to rewrite the instructions, within
  --budget metric calls.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError

OPTIMIZERS = ("bootstrap", "mipro", "gepa")


@dataclass
class OptimizeConfig:
    optimizer: str = "bootstrap"
    split: str = "humaneval-train"  # or a JSONL file of tasks
    limit: int = 20  # tasks taken from the split (before the validation part is set aside)
    val: float = 0.3  # the share of tasks kept for validation
    demos: int = 2  # bootstrapped demonstrations per step
    rounds: int = 1  # repair rounds inside the program
    trials: int = 6  # mipro: search trials
    budget: int = 60  # gepa: metric calls
    max_new_tokens: int = 256
    prompt_model: str = ""  # mipro/gepa: the model that proposes instructions (default: the same one)
    seed: int = 0
    out: str = ""

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise AssistantError(f"unknown optimizer {self.optimizer!r}: choose {', '.join(OPTIMIZERS)}")
        if self.limit < 1 or not 0 <= self.val < 1 or self.demos < 0 or self.rounds < 0 or self.trials < 1 \
                or self.budget < 1 or self.max_new_tokens < 16:
            raise AssistantError("--limit, --trials and --budget must be at least 1, --val in [0, 1), --demos and "
                                 "--rounds at least 0, --max-new-tokens at least 16")


# --- tasks ---------------------------------------------------------------------------------------------------


def humaneval_tasks(limit: int | None = None) -> list[dict]:
    """The training half of HumanEval (even indices) whose prompts show at least one example."""
    from assistant.examples import extract_checks
    from assistant.humaneval import BenchConfig, problems

    probs = problems()
    ids = BenchConfig(half="train").task_ids(list(probs))
    tasks = [{"id": t, "stub": probs[t]["prompt"], "fn": probs[t]["entry_point"]} for t in ids
             if extract_checks(probs[t]["prompt"], probs[t]["entry_point"])]
    return tasks[:limit] if limit else tasks


def stub_of(code: str) -> dict | None:
    """{stub, fn} from a function whose docstring has doctest examples: its imports, def line and docstring."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    lines = code.splitlines()
    imports = [ast.get_source_segment(code, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in tree.body:
        doc = ast.get_docstring(node) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        if ">>>" not in (doc or ""):
            continue
        first = node.body[0]
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        stub = "\n".join(lines[start - 1: first.end_lineno]) + "\n"
        head = "\n".join(i for i in imports if i)
        return {"stub": (head + "\n\n\n" if head else "") + stub, "fn": node.name}
    return None


def file_tasks(path: Path, limit: int | None = None) -> list[dict]:
    """Tasks from JSONL: {"stub"|"prompt", "fn"|"entry_point"}, {"task", "fn"} (the program designs the stub), or a
    collect sample ({"response"} or {"completion"} holding a function with doctest examples)."""
    from assistant.examples import extract_checks
    from assistant.repair import last_function_name

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AssistantError(f"cannot read the tasks {path}: {getattr(exc, 'strerror', None) or exc}") from None
    tasks, skipped = [], 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise AssistantError(f"{path}:{n} is not JSON") from None
        if not isinstance(row, dict):
            skipped += 1
            continue
        task = None
        stub, fn = row.get("stub") or row.get("prompt"), row.get("fn") or row.get("entry_point")
        if isinstance(stub, str) and stub.strip():
            task = {"stub": stub, "fn": fn or ""}
        elif isinstance(row.get("task"), str) and row["task"].strip():
            task = {"task": row["task"], "fn": fn or ""}
        else:
            code = row.get("response") or row.get("completion")
            task = stub_of(code) if isinstance(code, str) else None
        if task and task.get("stub"):
            name = task["fn"] or last_function_name(task["stub"]) or ""
            if not name or not extract_checks(task["stub"], name):
                task = None  # nothing visible to score against
            else:
                task["fn"] = name
        if task is None:
            skipped += 1
            continue
        task["id"] = str(row.get("id") or row.get("task_id") or f"{path.name}:{n}")
        tasks.append(task)
        if limit and len(tasks) >= limit:
            break
    if not tasks:
        raise AssistantError(f"{path} has no usable tasks ({skipped} lines skipped): each needs a stub with doctest "
                             "examples, a task in words, or a function with doctests")
    return tasks


def load_tasks(split: str, limit: int | None) -> list[dict]:
    if split in ("humaneval-train", "humaneval"):
        return humaneval_tasks(limit)
    path = Path(split).expanduser()
    if not path.is_file():
        raise AssistantError(f"--train-split is humaneval-train or a JSONL file; {split} is neither")
    return file_tasks(path, limit)


def split_tasks(tasks: list[dict], val: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded shuffle, at least one task to train on."""
    order = list(tasks)
    random.Random(seed).shuffle(order)
    n_val = min(int(round(len(order) * val)), len(order) - 1)
    return order[n_val:], order[:n_val]


# --- running -------------------------------------------------------------------------------------------------


def evaluate(program, examples: list, label: str, *, out=None) -> tuple[float, list[float]]:
    """The mean visible-example pass rate of `program` over `examples` (a progress bar on stderr)."""
    from tqdm import tqdm

    from assistant.program import metric

    scores = []
    for ex in tqdm(examples, desc=label, unit="task", file=sys.stderr, dynamic_ncols=True, leave=False):
        try:
            scores.append(metric(ex, program(**ex.inputs())))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one broken task scores 0; the others still count
            print(f"  {ex.id}: {type(exc).__name__}: {str(exc)[:160]}", file=out or sys.stderr)
            scores.append(0.0)
    return (sum(scores) / len(scores) if scores else 0.0), scores


def compile_program(cfg: OptimizeConfig, student, train: list, val: list, *, lm, prompt_lm):
    import dspy

    from assistant.program import feedback_metric, metric

    if cfg.optimizer == "bootstrap":
        teleprompter = dspy.BootstrapFewShot(metric=metric, metric_threshold=1.0, max_bootstrapped_demos=cfg.demos,
                                             max_labeled_demos=0, max_rounds=1)
        return teleprompter.compile(student, trainset=train)
    if cfg.optimizer == "mipro":
        teleprompter = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, task_model=lm, auto=None,
                                    num_candidates=3, num_threads=1, max_bootstrapped_demos=cfg.demos,
                                    max_labeled_demos=0, seed=cfg.seed, verbose=False, track_stats=False,
                                    metric_threshold=1.0)
        return teleprompter.compile(student, trainset=train, valset=val or None, num_trials=cfg.trials,
                                    minibatch=len(val or train) > 4, minibatch_size=max(2, min(8, len(val or train))),
                                    minibatch_full_eval_steps=max(2, cfg.trials // 2))
    # "all": each reflection rewrites every step that ran. Round robin would spend whole iterations on the design
    # step, which stub tasks never call (GEPA then finds nothing to reflect on).
    teleprompter = dspy.GEPA(metric=feedback_metric, max_metric_calls=cfg.budget, reflection_lm=prompt_lm,
                             reflection_minibatch_size=min(3, len(train)), num_threads=1, seed=cfg.seed,
                             use_merge=False, track_stats=False, component_selector="all")
    return teleprompter.compile(student, trainset=train, valset=val or train)


def default_out(optimizer: str) -> Path:
    from assistant.home import subdir

    return subdir("programs") / f"repair-{optimizer}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def optimize(settings, cfg: OptimizeConfig, *, model=None, prompt_model=None, out=None, command: str = "") -> dict:
    """Compile, score default and compiled on the validation tasks, save. Returns what it saved as `meta`,
    plus the file's path."""
    import dspy

    from assistant import sandbox
    from assistant.home import subdir
    from assistant.program import (CodeAdapter, RepairProgram, checking, describe, examples_from, make_lm,
                                   save_program, to_prompts)

    out = out or sys.stdout
    cfg.check()

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    tasks = load_tasks(cfg.split, cfg.limit)
    train_tasks, val_tasks = split_tasks(tasks, cfg.val, cfg.seed)
    if cfg.optimizer in ("mipro", "gepa") and len(train_tasks) < 2:
        raise AssistantError(f"{cfg.optimizer} needs at least 2 training tasks; raise --limit")
    say(f"tasks: {len(tasks)} from {cfg.split} ({len(train_tasks)} to compile on, {len(val_tasks)} held for "
        f"validation); metric: the visible-example pass rate")
    if model is None:
        from assistant.loader import load_plugins
        from assistant.models.builtin import load_model

        plugins = load_plugins()
        model = load_model(settings, plugins)
        model.wait()
        if cfg.prompt_model and prompt_model is None:
            prompt_model = load_model(dataclasses.replace(settings, model=cfg.prompt_model), plugins)
            prompt_model.wait()
    lm = make_lm(model, max_new_tokens=cfg.max_new_tokens)
    prompt_lm = make_lm(prompt_model, max_new_tokens=1024) if prompt_model is not None else \
        make_lm(model, max_new_tokens=1024)
    train, val = examples_from(train_tasks), examples_from(val_tasks)
    scratch = subdir("runs") / "optimize" / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    box = sandbox.Sandbox(scratch, settings.sandbox, settings.sandbox_uid)
    start = time.monotonic()
    try:
        with dspy.context(lm=lm, adapter=CodeAdapter()), checking(box):
            student = RepairProgram(rounds=cfg.rounds, max_new_tokens=cfg.max_new_tokens)
            say(f"compiling with {cfg.optimizer} on {getattr(model, 'name', 'the model')} "
                f"(Ctrl-C stops; nothing is saved)")
            try:
                compiled = compile_program(cfg, student, train, val, lm=lm, prompt_lm=prompt_lm)
            except AssistantError:
                raise
            except Exception as exc:  # DSPy and its optimizers raise many kinds; say which stage failed
                raise AssistantError(f"{cfg.optimizer} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
            compile_seconds = time.monotonic() - start
            say(f"compiled in {compile_seconds / 60:.1f} min: {describe(to_prompts(compiled))}")
            before = after = None
            if val:
                before, before_scores = evaluate(RepairProgram(cfg.rounds, cfg.max_new_tokens), val, "default")
                after, after_scores = evaluate(compiled, val, "compiled")
                say(f"validation ({len(val)} tasks, visible examples): default {before:.2f}, compiled {after:.2f}")
    finally:
        box.close()
    engine = getattr(lm, "assistant_engine", None)
    meta = {"optimizer": cfg.optimizer, "model": getattr(model, "name", ""),
            "prompt_model": getattr(prompt_model, "name", "") if prompt_model is not None else "",
            "split": cfg.split, "train": [t["id"] for t in train_tasks], "val": [t["id"] for t in val_tasks],
            "settings": dataclasses.asdict(cfg), "val_default": before, "val_compiled": after,
            "compile_seconds": round(compile_seconds, 1), "seconds": round(time.monotonic() - start, 1),
            "model_calls": getattr(engine, "calls", None), "command": command}
    path = save_program(compiled, Path(cfg.out).expanduser() if cfg.out else default_out(cfg.optimizer), meta)
    say(f"saved {path}")
    _chart(meta, path, out)
    say(f"use it:  assistant repair --program {path} --task ...\n"
        f"compare: assistant bench humaneval --half heldout --program {path}   (and the same without --program)")
    return {**meta, "path": str(path)}


def _chart(meta: dict, path: Path, out) -> None:
    """<home>/runs/optimize/STAMP.json and .png: the validation scores (what the dashboard's pass rates read)."""
    if meta["val_default"] is None:
        return
    from assistant.charts import Panel, save_run

    values = [100 * meta["val_default"], 100 * meta["val_compiled"]]
    try:
        save_run("optimize", {**meta, "program": str(path)}, f"assistant optimize ({meta['optimizer']}), "
                 f"{len(meta['val'])} validation tasks",
                 [Panel("visible-example pass rate (%)", ["default", "compiled"], values,
                        notes=[f"{v:.0f}%" for v in values], colors=["#9e9e9e", "#1f77b4"], ylim=(0, 110))],
                 out=out)
    except OSError as exc:
        print(f"(no chart: {exc.strerror})", file=out)
