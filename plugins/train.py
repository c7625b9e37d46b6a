"""`assistant train`: fine-tune a causal language model on instruction samples (the JSONL `collect` writes), fully
or with LoRA (peft), with transformers' Trainer, on the CPU as well as on a GPU; and `--optuna`: a sweep of the
learning rate, batch size and LoRA rank. Also the `train` tool and the /train command.

What a run leaves in its output folder: the model (LoRA merged in) and tokenizer, usable as `--model DIR`;
`train_info.json` (settings, data, losses, time); `loss.png`; `checkpoints/` (a rerun resumes from the newest).
Its loss curve goes to <home>/runs/train/<run>/metrics.jsonl as it trains: that is what the dashboard draws."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from assistant.errors import AssistantError
from assistant.hookspecs import hookimpl
from assistant.tools import requires_approval

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LORA_TARGETS = "all-linear"
FALLBACK_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


class TrainError(AssistantError):
    pass


@dataclass
class TrainConfig:
    data: str
    base_model: str = "smollm2-135m"
    out_dir: str = ""
    steps: int = 100
    lora_r: int = 0  # 0: full fine-tuning (all weights); >0: LoRA adapters of this rank, merged in at the end
    lora_alpha: int = 0  # 0: twice the rank
    learning_rate: float = 0.0  # 0: 5e-5 for full fine-tuning, 2e-4 for LoRA
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    block_size: int = 256
    precision: str = "auto"
    eval_data: str = ""
    eval_share: float = 0.05  # held out from --data when no --eval-data is given (at least 20 samples needed)
    seed: int = 0
    logging_steps: int = 5
    save_steps: int = 50
    run_name: str = ""

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-4 if self.lora_r else 5e-5)

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise TrainError("--steps, --batch-size and --gradient-accumulation-steps must be at least 1")
        if self.block_size < 16:
            raise TrainError("--block-size must be at least 16 tokens")
        if self.lora_r < 0 or not (0 <= self.learning_rate < 1):
            raise TrainError("--lora-r must be 0 (full fine-tuning) or more, and --learning-rate between 0 and 1")
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if not self.out_dir:
            raise TrainError("--out-dir is required: where the trained model goes")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    train_loss: float
    first_loss: float | None
    eval_loss: float | None
    eval_loss_before: float | None
    samples: int
    tokens: int
    seconds: float
    interrupted: bool = False
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """What a sweep minimises: the held-out loss when there is one, else the last training loss."""
        return self.eval_loss if self.eval_loss is not None else self.train_loss


# --- data ---------------------------------------------------------------------------------------------------

def load_samples(path: str | os.PathLike) -> list[tuple[list[dict], str]]:
    """(prompt messages, response) per line. Accepted lines: {"instruction", "response"} (what `collect` writes),
    {"prompt", "completion"}, {"messages": [... the last one the assistant's]}, or {"text"} (all of it learnt)."""
    path = Path(path).expanduser()
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise TrainError(f"cannot read {path}: {exc.strerror}") from None
    samples, bad = [], []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            samples.append(_sample(row))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad.append(n)
    if bad and not samples:
        raise TrainError(f"{path}: no usable sample (line {bad[0]} and {len(bad) - 1} more are not instruction/"
                         "response, prompt/completion, messages or text objects)")
    if not samples:
        raise TrainError(f"{path} holds no samples")
    if bad:
        print(f"warning: {len(bad)} lines of {path.name} skipped (first: line {bad[0]})", file=sys.stderr)
    return samples


def _sample(row: dict) -> tuple[list[dict], str]:
    if "instruction" in row and "response" in row:
        prompt, response = row["instruction"], row["response"]
    elif "prompt" in row and "completion" in row:
        prompt, response = row["prompt"], row["completion"]
    elif "messages" in row:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
        if not messages or messages[-1]["role"] != "assistant":
            raise ValueError("the last message is not the assistant's")
        return messages[:-1], messages[-1]["content"]
    elif "text" in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise ValueError("empty text")
        return [], row["text"]
    else:
        raise KeyError("no known fields")
    if not isinstance(prompt, str) or not isinstance(response, str) or not response.strip():
        raise ValueError("prompt and response must be text")
    return [{"role": "user", "content": prompt}], response


def encode(tokenizer, messages: list[dict], response: str, block: int) -> dict | None:
    """input_ids and labels (-100 on the prompt: only the response is learnt), cut to block tokens; None when
    not a single response token fits."""
    if messages:
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            prompt = FALLBACK_TEMPLATE.format(prompt="\n\n".join(m["content"] for m in messages))
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    else:
        prompt_ids = []
    answer_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:block]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:block]
    if all(label == -100 for label in labels):
        return None
    return {"input_ids": ids, "labels": labels}


class Collator:
    """Pads a batch to its longest row (labels with -100)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [self.pad_id] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


# --- the model ----------------------------------------------------------------------------------------------

def resolve_base(spec: str) -> Path:
    """A folder with config.json (a model folder, or an earlier `train` output), a .gguf file (converted once to
    a cached folder), or a registry name such as smollm2-135m (pulled, then converted)."""
    from assistant.models.registry import REGISTRY, pull
    from assistant.models.transformers_backend import convert_gguf

    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise TrainError(f"{spec}: not a model folder (no config.json)")
        return path
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path)
    if spec in REGISTRY:
        return convert_gguf(pull(REGISTRY[spec], quiet=True))
    raise TrainError(f"--base-model {spec!r}: not a model folder, a .gguf file or a registry name "
                     f"({', '.join(REGISTRY)})")


def choose_precision(precision: str) -> str:
    import torch

    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise TrainError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    # bf16 autocast on the CPU: about 1.7x fp32 where the CPU has bf16 instructions (AVX-512 BF16, AMX).
    return "bf16" if _cpu_has_bf16() else "fp32"


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def free_memory_bytes() -> int:
    """Memory a trial may take: free GPU memory on a GPU, else the system's available memory."""
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


# --- recording -------------------------------------------------------------------------------------------------

class Recorder:
    """Writes each logged loss to metrics.jsonl (in the run folder under <home>/runs/train, which the dashboard
    reads, and in the output folder), prints progress, and turns the first Ctrl-C into a clean stop with a
    checkpoint; a sweep's trial gets its evaluations reported (and pruned)."""

    def __init__(self, paths: list[Path], total: int, *, trial=None, quiet: bool = False):
        self.paths = paths
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.trial = trial
        self.quiet = quiet
        self.stop = False
        self.pruned = False
        self.losses: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.bar = None

    def write(self, point: dict) -> None:
        line = json.dumps(point) + "\n"
        for path in self.paths:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)

    def callback(self):
        from transformers import TrainerCallback

        recorder = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                step = state.global_step
                if "loss" in logs and math.isfinite(logs["loss"]):
                    recorder.losses.append((step, float(logs["loss"])))
                    recorder.write({"step": step, "loss": round(float(logs["loss"]), 5),
                                    "lr": logs.get("learning_rate"), "ts": time.time()})
                    if recorder.bar is not None:
                        recorder.bar.set_postfix_str(f"loss {logs['loss']:.4f}")
                    elif not recorder.quiet:  # not a terminal: a line per logged step
                        print(f"  step {step}/{recorder.total}  loss {logs['loss']:.4f}", file=sys.stderr, flush=True)
                if "eval_loss" in logs and not (recorder.evals and recorder.evals[-1][0] == step):
                    recorder.evals.append((step, float(logs["eval_loss"])))
                    recorder.write({"step": step, "eval_loss": round(float(logs["eval_loss"]), 5), "ts": time.time()})
                    if recorder.trial is not None:
                        recorder.trial.report(float(logs["eval_loss"]), step)
                        if recorder.trial.should_prune():
                            recorder.pruned = True
                            control.should_training_stop = True

            def on_train_begin(self, args, state, control, **kwargs):
                if not recorder.quiet and sys.stderr.isatty():
                    from tqdm import tqdm

                    recorder.bar = tqdm(total=recorder.total, initial=state.global_step, unit="step", file=sys.stderr,
                                        dynamic_ncols=True, desc="training")

            def on_train_end(self, args, state, control, **kwargs):
                if recorder.bar is not None:
                    recorder.bar.close()
                    recorder.bar = None

            def on_step_end(self, args, state, control, **kwargs):
                if recorder.bar is not None:
                    recorder.bar.update(state.global_step - recorder.bar.n)
                if recorder.stop:
                    control.should_save = True
                    control.should_training_stop = True

        return Callback()

    def on_sigint(self, signum, frame):
        if self.stop:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this step (a checkpoint is saved; Ctrl-C again to stop at once) ...", file=sys.stderr)


def _newest_checkpoint(folder: Path) -> Path | None:
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def train(cfg: TrainConfig, *, trial=None, quiet: bool = False, save: bool = True) -> TrainResult:
    """One training run; see the module's docstring for what it leaves behind."""
    cfg.check()
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from assistant.models.transformers_backend import _quiet_transformers

    _quiet_transformers()
    out = Path(cfg.out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_base(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    samples = load_samples(cfg.data)
    evals = load_samples(cfg.eval_data) if cfg.eval_data else []
    if not evals and len(samples) >= 20 and cfg.eval_share > 0:
        shuffled = samples[:]
        random.Random(cfg.seed).shuffle(shuffled)
        cut = max(1, int(len(shuffled) * cfg.eval_share))
        evals, samples = shuffled[:cut], shuffled[cut:]
    rows = [r for r in (encode(tokenizer, m, a, cfg.block_size) for m, a in samples) if r]
    eval_rows = [r for r in (encode(tokenizer, m, a, cfg.block_size) for m, a in evals) if r]
    if not rows:
        raise TrainError("no sample has a response token within --block-size")
    tokens = sum(len(r["input_ids"]) for r in rows)
    precision = choose_precision(cfg.precision)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
                                                 lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    run_name = cfg.run_name or out.name
    from assistant.home import subdir

    run_dir = subdir("runs") / "train" / run_name
    checkpoints = out / "checkpoints"
    resume = _newest_checkpoint(checkpoints)
    if resume is None:  # a fresh run: a fresh curve
        for path in (run_dir / "metrics.jsonl", out / "metrics.jsonl"):
            path.unlink(missing_ok=True)
    recorder = Recorder([run_dir / "metrics.jsonl", out / "metrics.jsonl"], cfg.steps, trial=trial, quiet=quiet)
    args = TrainingArguments(
        output_dir=str(checkpoints), max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=min(10, cfg.steps // 10),
        logging_steps=max(1, min(cfg.logging_steps, cfg.steps)), logging_first_step=True,
        save_strategy="steps" if save else "no", save_steps=max(1, cfg.save_steps), save_total_limit=2,
        eval_strategy="steps" if eval_rows else "no", eval_steps=max(1, min(cfg.save_steps, cfg.steps)),
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu", seed=cfg.seed,
        report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=eval_rows or None,
                      data_collator=Collator(tokenizer.pad_token_id), callbacks=[recorder.callback()])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for noisy in (PrinterCallback, ProgressCallback):  # the recorder shows progress (and dicts of logs do not)
        trainer.remove_callback(noisy)
    eval_before = None
    if eval_rows and resume is None:
        eval_before = float(trainer.evaluate()["eval_loss"])
        recorder.evals.clear()
    if not quiet:
        mode = f"LoRA r={cfg.lora_r}" if cfg.lora_r else "full fine-tuning"
        print(f"training {base.name}: {mode}, {len(rows)} samples ({tokens:,} tokens), {len(eval_rows)} held out, "
              f"{cfg.steps} steps of {cfg.batch_size}x{cfg.gradient_accumulation_steps}, lr {cfg.lr:g}, {precision} "
              f"on {device}" + (f"; resuming from {resume.name}" if resume else ""), file=sys.stderr, flush=True)
    start = time.monotonic()
    previous = signal.getsignal(signal.SIGINT)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGINT, recorder.on_sigint)
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    seconds = time.monotonic() - start
    if recorder.pruned:
        import optuna

        raise optuna.TrialPruned(f"pruned at step {trainer.state.global_step}")
    eval_loss = float(trainer.evaluate()["eval_loss"]) if eval_rows else None
    losses = recorder.losses or [(trainer.state.global_step, float("nan"))]
    result = TrainResult(out, trainer.state.global_step, losses[-1][1], losses[0][1] if recorder.losses else None,
                         eval_loss, eval_before, len(rows), tokens, seconds, interrupted=recorder.stop,
                         losses=recorder.losses)
    if save and not recorder.stop:
        _save(trainer, tokenizer, cfg, result, base, precision)
    return result


def _save(trainer, tokenizer, cfg: TrainConfig, result: TrainResult, base: Path, precision: str) -> None:
    from assistant.charts import Panel, save_chart

    model = trainer.model
    if cfg.lora_r:
        model = model.merge_and_unload()  # a plain model: `--model DIR` needs no peft
    out = result.out_dir
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    info = {"base_model": cfg.base_model, "base_path": str(base), "data": str(Path(cfg.data).expanduser().resolve()),
            "config": asdict(cfg), "precision": precision, "steps": result.steps, "samples": result.samples,
            "tokens": result.tokens, "first_loss": result.first_loss, "train_loss": result.train_loss,
            "eval_loss_before": result.eval_loss_before, "eval_loss": result.eval_loss,
            "seconds": round(result.seconds, 1), "finished": time.time()}
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    panels = [Panel("loss", lines={"train": ([s for s, _ in result.losses], [v for _, v in result.losses])},
                    xlabel="step")]
    save_chart(out / "loss.png", f"{out.name}: {'LoRA r=' + str(cfg.lora_r) if cfg.lora_r else 'full'} from "
               f"{base.name}", panels)
    register_trained(out, info)


def register_trained(out: Path, info: dict) -> None:
    """Remember a trained model for `assistant models list` (<home>/models/trained.json)."""
    from assistant.home import models_dir

    index = models_dir() / "trained.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    known[str(out)] = {k: info.get(k) for k in ("base_model", "steps", "train_loss", "eval_loss", "eval_loss_before",
                                                "finished", "agent_pass", "raw_pass")}
    tmp = index.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2))
    os.replace(tmp, index)


def trained_models() -> dict[str, dict]:
    from assistant.home import models_dir

    try:
        known = json.loads((models_dir() / "trained.json").read_text())
    except (OSError, ValueError):
        return {}
    return {path: info for path, info in known.items() if (Path(path) / "config.json").exists()}


# --- the sweep -------------------------------------------------------------------------------------------------

RANKS = (4, 8, 16, 32)
BATCHES = (1, 2, 4, 8)


def sweep(cfg: TrainConfig, n_trials: int, *, min_free_gb: float = 2.0, run: Callable[..., TrainResult] = train,
          out=None) -> dict:
    """An Optuna study (TPE sampler, median pruner on the held-out loss) over learning rate, batch size and LoRA
    rank, stored in <out-dir>/study.db so a rerun goes on where it stopped. A trial that crashes or runs out of
    memory scores infinity and the study goes on; a trial that would start with less than `min_free_gb` free
    is skipped (pruned). The best trial's parameters are printed and saved to <out-dir>/best_params.json."""
    import optuna

    out = out or sys.stdout
    cfg.check()
    out_dir = Path(cfg.out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="train", storage=f"sqlite:///{out_dir / 'study.db'}", load_if_exists=True,
                                direction="minimize", sampler=optuna.samplers.TPESampler(seed=cfg.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    finished = [t for t in study.trials if t.state.is_finished()]
    todo = max(0, n_trials - len(finished))
    print(f"sweep: {len(finished)} trials already in {out_dir / 'study.db'}, {todo} to run", file=out, flush=True)

    def objective(trial) -> float:
        free = free_memory_bytes()
        if free < min_free_gb * 2**30:
            trial.set_user_attr("skipped", f"{free / 2**30:.1f} GB free, below {min_free_gb} GB")
            raise optuna.TrialPruned(f"only {free / 2**30:.1f} GB free")
        params = {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
                  "batch_size": trial.suggest_categorical("batch_size", BATCHES),
                  "lora_r": trial.suggest_categorical("lora_r", RANKS)}
        trial_cfg = replace(cfg, out_dir=str(out_dir / "trials" / f"trial-{trial.number}"),
                            run_name=f"{out_dir.name}-trial-{trial.number}", **params)
        try:
            result = run(trial_cfg, trial=trial, quiet=True, save=False)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - out of memory, a crash: this trial scores infinity
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:300]}")
            print(f"  trial {trial.number} {params}: failed ({type(exc).__name__}: {str(exc)[:120]}); scored inf",
                  file=out, flush=True)
            return float("inf")
        print(f"  trial {trial.number} {params}: loss {result.score:.4f} ({result.seconds:.0f} s)", file=out, flush=True)
        return result.score

    study.optimize(objective, n_trials=todo)
    scored = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
    if not scored:
        raise TrainError("no trial finished: see the errors above (each scored inf, or was skipped)")
    best = min(scored, key=lambda t: t.value)
    summary = {"best_trial": best.number, "best_loss": best.value, "params": best.params,
               "trials": [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                           **t.user_attrs} for t in study.trials]}
    (out_dir / "best_params.json").write_text(json.dumps(summary, indent=2))
    print(f"best: trial {best.number}, loss {best.value:.4f}, {best.params}\n"
          f"saved: {out_dir / 'best_params.json'}; train with them: assistant train ... --learning-rate "
          f"{best.params['learning_rate']:.2e} --batch-size {best.params['batch_size']} --lora-r {best.params['lora_r']}",
          file=out)
    return summary


# --- entry points ----------------------------------------------------------------------------------------------

def add_parser(sub, shared) -> None:
    import argparse

    p = sub.add_parser(
        "train", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fine-tune a model on instruction samples (full or LoRA); --optuna sweeps its settings",
        description="Fine-tune a causal language model on a JSONL of samples (`assistant collect` writes them:\n"
        "instruction/response; also prompt/completion, messages, text). Only the responses are learnt. The result\n"
        "(LoRA merged in) goes to --out-dir, usable as --model DIR; a rerun resumes from the newest checkpoint;\n"
        "Ctrl-C stops after the current step with a checkpoint. The loss curve is written as it trains\n"
        "(the dashboard draws it) and as loss.png at the end.",
        epilog="examples:\n"
        "  assistant train --data samples.jsonl --out-dir ~/models/smol-ft --steps 200\n"
        "  assistant train --data samples.jsonl --out-dir ~/models/smol-lora --lora-r 16 --steps 300\n"
        "  assistant train --data samples.jsonl --out-dir ~/sweeps/a --optuna --n-trials 8 --steps 60\n"
        "  assistant --model ~/models/smol-ft                 use it")
    p.add_argument("--data", required=True, metavar="FILE", help="training samples (JSONL)")
    p.add_argument("--base-model", default="smollm2-135m", metavar="M",
                   help="a registry name, a .gguf file or a model folder (default smollm2-135m)")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where the model, checkpoints and charts go")
    p.add_argument("--steps", type=int, default=100, metavar="N", help="optimiser steps (default 100)")
    p.add_argument("--lora-r", type=int, default=0, metavar="R", help="LoRA rank; 0 = full fine-tuning (default)")
    p.add_argument("--lora-alpha", type=int, default=0, metavar="A", help="LoRA alpha (default 2 x rank)")
    p.add_argument("--learning-rate", type=float, default=0.0, metavar="LR",
                   help="default 5e-5 (full) or 2e-4 (LoRA)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="samples per step per device (default 4)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1, metavar="K")
    p.add_argument("--block-size", type=int, default=256, metavar="T", help="tokens per sample at most (default 256)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 where the CPU or GPU supports it, else fp32 (fp16 on older GPUs)")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="same as --precision bf16")
    p.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="same as --precision fp16")
    p.add_argument("--eval-data", metavar="FILE", default="",
                   help="held-out samples (default: 5%% of --data when it has 20 or more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=50, metavar="N", help="checkpoint (and evaluate) every N steps")
    p.add_argument("--optuna", action="store_true", help="sweep learning rate, batch size and LoRA rank instead")
    p.add_argument("--n-trials", type=int, default=8, metavar="N", help="trials of the sweep in all (default 8)")
    p.add_argument("--min-free-gb", type=float, default=2.0, metavar="GB",
                   help="skip a trial when less memory (VRAM on a GPU) is free (default 2)")


def config_from(args) -> TrainConfig:
    return TrainConfig(data=args.data, base_model=args.base_model, out_dir=args.out_dir, steps=args.steps,
                       lora_r=args.lora_r, lora_alpha=args.lora_alpha, learning_rate=args.learning_rate,
                       batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
                       block_size=args.block_size, precision=args.precision, eval_data=args.eval_data, seed=args.seed,
                       save_steps=args.save_steps)


def run(args, settings) -> int:
    cfg = config_from(args)
    if args.optuna:
        if args.n_trials < 1:
            raise TrainError("--n-trials must be at least 1")
        sweep(cfg, args.n_trials, min_free_gb=args.min_free_gb)
        return 0
    result = train(cfg)
    print(report(result))
    return 130 if result.interrupted else 0


def report(result: TrainResult) -> str:
    if result.interrupted:
        return (f"interrupted at step {result.steps}: a checkpoint is in {result.out_dir / 'checkpoints'}; run the same "
                "command again to go on")
    lines = [f"trained {result.steps} steps on {result.samples} samples ({result.tokens:,} tokens) in "
             f"{result.seconds / 60:.1f} min ({result.steps / max(result.seconds, 1e-9) * 60:.1f} steps/min)"]
    if result.first_loss is not None:
        lines.append(f"training loss {result.first_loss:.4f} -> {result.train_loss:.4f}")
    if result.eval_loss is not None:
        before = f"{result.eval_loss_before:.4f} -> " if result.eval_loss_before is not None else ""
        lines.append(f"held-out loss {before}{result.eval_loss:.4f}")
    lines.append(f"model: {result.out_dir} (use it: assistant --model {result.out_dir}); chart: "
                 f"{result.out_dir / 'loss.png'}")
    return "\n".join(lines)


@requires_approval
def train_tool(data: str, out_dir: str, steps: int = 50, lora_r: int = 0, context=None) -> str:
    """Fine-tune the local model on instruction samples (long work: minutes to hours).

    Args:
        data: A JSONL file of samples in the workspace (instruction/response).
        out_dir: The folder, in the workspace, for the trained model.
        steps: Optimiser steps.
        lora_r: LoRA rank; 0 trains all weights.
    """
    root = context.workspace if context is not None else None
    data_path = root.resolve(data) if root else Path(data)
    out_path = root.resolve(out_dir, for_write=True) if root else Path(out_dir)
    return report(train(TrainConfig(data=str(data_path), out_dir=str(out_path), steps=int(steps), lora_r=int(lora_r)),
                        quiet=True))


@hookimpl
def register_tools(register):
    register(train_tool, name="train")


@hookimpl
def register_commands(register):
    def train_command(args: str, session) -> str:
        """/train DATA OUT_DIR [STEPS]: fine-tune the embedded model on DATA (instruction/response JSONL)."""
        words = args.split()
        if len(words) not in (2, 3) or (len(words) == 3 and not words[2].isdigit()):
            return "usage: /train DATA.jsonl OUT_DIR [STEPS]   (assistant train --help has every option)"
        steps = int(words[2]) if len(words) == 3 else 50
        try:
            return report(train(TrainConfig(data=words[0], out_dir=words[1], steps=steps)))
        except AssistantError as exc:
            return f"error: {exc}"

    register("train", train_command, "fine-tune the model on samples: /train DATA OUT_DIR [STEPS]")

    def accept_command(args: str, session) -> str:
        """/accept: mark the last turn's answer as good; `assistant improve` learns from accepted answers."""
        from assistant.events import Meta

        turn = session.agent.turns
        if not turn:
            return "nothing to accept yet: ask something first"
        session.registry.hook.on_event(event=Meta("accepted", {"turn": turn}))
        return f"turn {turn} accepted: `assistant improve` will learn from it"

    register("accept", accept_command, "mark the last answer as good, for `assistant improve`")
