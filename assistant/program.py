"""The repair loop's three steps as a DSPy program (step 9): signatures, a module, and the glue to our models.

- ModelEngine: a DSPy engine over our Model protocol (in-process transformers, llama.cpp or an OpenAI-compatible
  server through our own httpx backend). DSPy never reaches a network through litellm: the LM it gets has this
  engine, litellm is not imported, and DSPy's own request cache is switched off (ours sits in front of the model
  where we want one).
- CodeAdapter: renders the design / generate / repair signatures with the same frame as the hand-written prompts
  (assistant.repair.render_step), so an uncompiled program says exactly what the default loop says; what
  compiling changes is each step's instruction and its few-shot demonstrations. Other signatures (an optimizer's
  own proposers) go through DSPy's ChatAdapter as usual.
- RepairProgram: generate -> test on the visible examples -> repair, as a dspy.Module that optimizers compile
  against the visible-example pass rate (`metric`).
- save_program / load_program / load_prompts: a compiled program is a JSON file (never pickle): DSPy's state of
  the three predictors plus what made it. The repair loop reads it as Prompts (`--program FILE`) and keeps its
  own batching, sampling and seeds.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

# Before dspy is imported: litellm (imported only if something asks for it) would otherwise fetch its model price
# list from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events  # noqa: E402

from assistant.doctest_runner import TestReport  # noqa: E402
from assistant.errors import AssistantError  # noqa: E402
from assistant.repair import (INSTRUCTIONS, STEP_INPUTS, STEPS, STOPS, Prompts, RepairError, Spec,  # noqa: E402
                              extract_code, generate, score_of, spec_from_design, visible_tester)

FORMAT = "assistant-program"
FORMAT_VERSION = 1

_setup_lock = threading.Lock()
_set_up = False


def setup() -> None:
    """DSPy settings that hold for every use here: no on-disk or in-memory request cache (pickled files in the
    home folder, and a cache that would replay one sampled candidate for every draw)."""
    global _set_up
    with _setup_lock:
        if not _set_up:
            dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
            _set_up = True


# --- the model side --------------------------------------------------------------------------------------


class ModelEngine:
    """A DSPy engine (complete(Request) -> Response) over one of our models. Each call is one reply; DSPy asks
    again for n > 1. The request's temperature, max_tokens, stop and seed are honoured."""

    def __init__(self, model, max_new_tokens: int = 256):
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.calls = 0
        self.tokens = 0

    def complete(self, request) -> Response:
        messages = []
        system = request.system
        if system is not None:
            text = system if isinstance(system, str) else "".join(getattr(p, "text", "") or "" for p in system)
            messages.append({"role": "system", "content": text})
        messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
        cfg = request.config
        texts, tokens = generate(self.model, messages, n=1, temperature=float(cfg.temperature or 0.0),
                                 max_new_tokens=int(cfg.max_tokens or self.max_new_tokens),
                                 seed=cfg.seed, stop=tuple(cfg.stop or ()))
        self.calls += 1
        self.tokens += tokens
        return Response(id=None, model=str(getattr(self.model, "name", "model")),
                        message=Message.assistant([TextPart(texts[0] if texts else "")]), finish_reason="stop",
                        usage=Usage(output_tokens=tokens))

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def make_lm(model, *, max_new_tokens: int = 256):
    """A dspy.LM that runs on `model` through ModelEngine, greedy unless a call asks otherwise."""
    setup()
    engine = ModelEngine(model, max_new_tokens)
    lm = dspy.LM(model=f"assistant/{getattr(model, 'name', 'model')}", engine=engine, cache=False, temperature=0.0,
                 max_tokens=max_new_tokens)
    lm.assistant_engine = engine  # its call and token counts (copies DSPy makes share the engine)
    return lm


# --- the signatures and their rendering --------------------------------------------------------------------


def _signature(step: str):
    fields = ", ".join(STEP_INPUTS[step])
    return dspy.Signature(f"{fields} -> reply", INSTRUCTIONS[step])


def step_of(signature) -> str | None:
    """Which loop step a signature is (by its fields), or None for anyone else's."""
    inputs, outputs = tuple(signature.input_fields), tuple(signature.output_fields)
    return next((s for s in STEPS if STEP_INPUTS[s] == inputs and outputs == ("reply",)), None)


def _demo_dict(step: str, demo) -> dict | None:
    keys = (*STEP_INPUTS[step], "reply")
    try:
        out = {k: demo[k] for k in keys}
    except (KeyError, TypeError):
        return None
    return out if all(isinstance(v, str) for v in out.values()) else None


class CodeAdapter(dspy.ChatAdapter):
    """The loop's own frame for its three signatures (the reply is taken whole: the loop extracts the code);
    DSPy's chat format for every other signature."""

    def format(self, signature, demos, inputs):
        step = step_of(signature)
        if step is None:
            return super().format(signature, demos, inputs)
        kept = [d for d in (_demo_dict(step, demo) for demo in demos) if d]
        return Prompts({step: signature.instructions}, {step: kept}).messages(step, inputs)

    def parse(self, signature, completion):
        if step_of(signature) is None:
            return super().parse(signature, completion)
        return {"reply": completion}


# --- the program ----------------------------------------------------------------------------------------------

Checker = Callable[[Spec, str], TestReport]
_checker: Checker | None = None


@contextmanager
def checking(box, *, timeout: float = 10.0) -> Iterator[None]:
    """Let RepairProgram test candidates on the visible examples in `box` (a module-level setting, not a module
    attribute: optimizers deep-copy programs, and a sandbox must not be copied)."""
    global _checker
    previous = _checker
    _checker = lambda spec, code: visible_tester(spec, box, timeout=timeout)(code)  # noqa: E731
    try:
        yield
    finally:
        _checker = previous


class RepairProgram(dspy.Module):
    """design (for a task in words) -> generate -> test on the visible examples -> repair (`rounds` times while
    it fails), keeping the best candidate. Returns code, passed, total and feedback."""

    def __init__(self, rounds: int = 1, max_new_tokens: int = 256):
        super().__init__()
        self.design = dspy.Predict(_signature("design"))
        self.generate = dspy.Predict(_signature("generate"))
        self.repair = dspy.Predict(_signature("repair"))
        self.rounds = rounds
        self.max_new_tokens = max_new_tokens

    def forward(self, stub: str = "", fn: str = "", task: str = ""):
        call = {"config": {"max_tokens": self.max_new_tokens, "stop": list(STOPS)}}
        if stub:
            spec = Spec.from_stub(stub, fn or None, task)
        else:
            reply = self.design(task=task, fn=fn or "solve", **call).reply or ""
            spec = spec_from_design(reply, task, fn or "solve")
        code = extract_code(self.generate(stub=spec.code, **call).reply or "", spec.fn)
        report = _checker(spec, code) if _checker else None
        for _ in range(self.rounds):
            if report is None or report.ok:
                break
            reply = self.repair(stub=spec.code, code=code, feedback=report.summary(), **call).reply or ""
            new_code = extract_code(reply, spec.fn)
            new_report = _checker(spec, new_code)
            if score_of(new_report) > score_of(report):
                code, report = new_code, new_report
        return dspy.Prediction(code=code, fn=spec.fn, passed=report.passed if report else 0,
                               total=report.total if report else 0, ok=bool(report and report.ok and report.total),
                               feedback=report.summary() if report and not report.ok else "")


def metric(example, prediction, trace=None) -> float:
    """The visible-example pass rate of the program's answer (0 when nothing runs or there is nothing to test)."""
    total = getattr(prediction, "total", 0) or 0
    return (getattr(prediction, "passed", 0) or 0) / total if total else 0.0


def feedback_metric(gold, prediction, trace=None, pred_name=None, pred_trace=None):
    """metric, with the failure summary as text: what GEPA's reflection reads."""
    score = metric(gold, prediction)
    text = getattr(prediction, "feedback", "") or ("all visible examples pass" if score == 1.0 else
                                                     "no visible example to test against")
    return dspy.Prediction(score=score, feedback=text)


# --- files ---------------------------------------------------------------------------------------------------


def save_program(program: RepairProgram, path: Path, meta: dict) -> Path:
    """Write the program as JSON (atomically): DSPy's predictor state plus `meta` (what made it)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = program.dump_state()
    for entry in state.values():
        if isinstance(entry, dict):
            entry["lm"] = None  # never the model's settings: the program runs on whatever model loads it
            entry["traces"], entry["train"] = [], []
    data = {"format": FORMAT, "version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "meta": meta, "state": state}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_program_file(path: str | Path) -> dict:
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssistantError(f"no program file at {path} (make one with `assistant optimize`)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AssistantError(f"cannot read the program {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("state"), dict):
        raise AssistantError(f"{path} is not a program written by `assistant optimize`")
    if data.get("version", 0) > FORMAT_VERSION:
        raise AssistantError(f"{path} was written by a newer assistant (format {data['version']})")
    return data


def load_program(path: str | Path, *, rounds: int = 1, max_new_tokens: int = 256) -> RepairProgram:
    """A RepairProgram with the saved instructions and demonstrations."""
    data = read_program_file(path)
    program = RepairProgram(rounds=rounds, max_new_tokens=max_new_tokens)
    state = data["state"]
    for entry in state.values():
        if isinstance(entry, dict) and entry.get("lm") is not None:
            entry["lm"] = None  # a program file never chooses a model or a server: --model does
    try:
        program.load_state(state)
    except Exception as exc:  # DSPy raises assorted types for a state that does not fit the program
        raise AssistantError(f"the program {path} does not fit the repair program: {exc}") from None
    return program


def to_prompts(program: RepairProgram, name: str = "program") -> Prompts:
    """The loop's Prompts from a program: each step's instruction and its demonstrations."""
    instructions, demos = {}, {}
    for step in STEPS:
        predictor = getattr(program, step)
        instructions[step] = predictor.signature.instructions
        kept = [d for d in (_demo_dict(step, demo) for demo in predictor.demos) if d]
        if kept:
            demos[step] = kept
    return Prompts(instructions, demos, name)


def load_prompts(path: str | Path) -> Prompts:
    """`--program FILE` as the repair loop uses it."""
    path = Path(path).expanduser()
    prompts = to_prompts(load_program(path), name=path.stem)
    for step, text in prompts.instructions.items():
        if not isinstance(text, str) or not text.strip():
            raise RepairError(f"the program {path} has an empty instruction for {step}")
    return prompts


def describe(prompts: Prompts) -> str:
    """One line: which instructions differ from the defaults and how many demonstrations each step has."""
    parts = []
    for step in STEPS:
        changed = prompts.instructions.get(step, INSTRUCTIONS[step]) != INSTRUCTIONS[step]
        parts.append(f"{step}: {'new' if changed else 'default'} instruction, {len(prompts.demos.get(step, []))} demos")
    return "; ".join(parts)


def program_id(path: str | Path) -> str:
    """A short content hash: benchmark runs with different programs must not share results."""
    import hashlib

    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:8]


def examples_from(tasks: list[dict[str, Any]]) -> list:
    """dspy.Examples (inputs: stub, fn, task) from task dicts."""
    return [dspy.Example(stub=t.get("stub", ""), fn=t.get("fn", ""), task=t.get("task", ""),
                         id=t.get("id", "")).with_inputs("stub", "fn", "task") for t in tasks]
