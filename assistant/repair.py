"""The test-driven repair loop: design → generate → test → analyse → repair, keeping the best candidate.

- design: from a task in words, the model drafts a signature and a docstring with doctest examples (skipped when
  the user gives --signature / --doctests, or a full stub such as a HumanEval prompt);
- generate: a first candidate (greedy, or sampled with --decode sample), then best-of-N sampled candidates in
  one batched call when the first fails;
- test: each candidate's code runs against the examples in the sandbox (assistant.doctest_runner);
- analyse: a concise summary of what failed (exception and line, the failing example, expected against got);
- repair: the model sees its code and the summary and answers with a corrected function; when the same failure
  comes back twice the loop is stuck and switches strategy (regenerates from the design at a higher
  temperature).

The loop stops when a candidate passes every example, when --iters repair rounds are spent, or when there is
nothing to test against. It returns the candidate that passed the most examples (the earliest on ties: the
first greedy candidate wins unless another does strictly better), never simply the last.
"""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from assistant.doctest_runner import TestReport, run_checks
from assistant.errors import AssistantError
from assistant.examples import Check, extract_checks

STOPS = ("\n```",)
DECODES = ("greedy", "sample")
PROFILES = ("default", "copy", "save", "fast")


class RepairError(AssistantError):
    pass


# --- what to build ------------------------------------------------------------------------------------


@dataclass
class Spec:
    """What the function must do: `code` is its stub (signature and docstring, plus any imports and helpers it
    needs), `checks` the examples it must pass, `task` the request in words when there was one."""

    fn: str
    code: str
    checks: list[Check] = field(default_factory=list)
    task: str = ""

    @classmethod
    def from_stub(cls, code: str, fn: str | None = None, task: str = "") -> "Spec":
        fn = fn or last_function_name(code)
        if not fn:
            raise RepairError("the stub defines no function; give --fn or a `def` line")
        return cls(fn, code, extract_checks(code, fn), task)


def last_function_name(code: str) -> str | None:
    names = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.MULTILINE)
    return names[-1] if names else None


def stub_from(signature: str, task: str = "", doctests: Iterable[str] = (), *, doc_tail: Iterable[str] = ()) -> str:
    """A function stub: the signature line, the task as its docstring, then doctest lines (">>> f(1)" with the
    result below, or "f(1) == 2") and any further docstring lines."""
    sig = signature.strip().rstrip(":")
    if not sig.startswith("def "):
        sig = "def " + sig
    # The task goes inside a docstring: its backslashes and triple quotes must not end or break it.
    safe = task.strip().replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    body = [line for line in textwrap.wrap(safe, 100)] if safe else []
    tail = [line.rstrip() for line in doc_tail]
    if tail and body:
        body.append("")
    body.extend(tail)
    for example in doctests:
        example = example.strip()
        if not example:
            continue
        if example.startswith(">>>"):
            body.extend(example.splitlines())
        else:
            compared = _equality(example)
            if compared:  # "f(1) == 2" -> ">>> f(1)" then "2"
                body.extend([">>> " + compared[0], compared[1]])
            else:
                body.append(">>> " + example)
    if not body:
        return f'{sig}:\n    """"""\n'
    if body[0].startswith(">>>"):
        body.insert(0, "")  # an example must start its own line
    rest = "".join("\n" + ("    " + line if line else "") for line in body[1:])
    return f'{sig}:\n    """{body[0]}{rest}\n    """\n'


def _equality(example: str) -> tuple[str, str] | None:
    """("f('a==b')", "True") from "f('a==b') == True"; None unless it is one == comparison."""
    try:
        node = ast.parse(example, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        return ast.get_source_segment(example, node.left), ast.get_source_segment(example, node.comparators[0])
    return None


# --- settings ------------------------------------------------------------------------------------------


@dataclass
class RepairConfig:
    decode: str = "greedy"  # how the first candidate is drawn
    candidates: int = 5  # best-of-N: the first candidate plus N-1 sampled in one batch when it fails
    iters: int = 2  # repair rounds after the candidates
    timeout: float = 10.0  # seconds for one test run of one candidate (all its examples)
    max_new_tokens: int = 320
    temperature: float = 0.8  # for sampled candidates and repairs after the first
    stuck_temperature: float = 1.0  # when the same failure comes twice: regenerate, hotter
    design: bool = True
    test: bool = True

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "RepairConfig":
        if profile not in PROFILES:
            raise RepairError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        base = cls(design=False, decode="greedy", candidates=1, iters=2, max_new_tokens=256) \
            if profile == "fast" else cls()
        for key, value in overrides.items():
            if value is not None:
                setattr(base, key, value)
        if base.decode not in DECODES:
            raise RepairError(f"--decode must be one of {', '.join(DECODES)}")
        if base.candidates < 1 or base.iters < 0:
            raise RepairError("--candidates must be at least 1 and --iters at least 0")
        return base


# --- what happened -------------------------------------------------------------------------------------


def score_of(report: TestReport | None) -> tuple[int, int]:
    """(passed examples, runs at all): what keep-best ranks by."""
    return (report.passed, int(report.runs)) if report else (0, 0)


@dataclass
class Attempt:
    code: str
    stage: str  # first | sample | repair | regenerate
    round: int
    report: TestReport | None = None
    output: str = ""  # the model's raw reply

    @property
    def score(self) -> tuple[int, int]:
        return score_of(self.report)

    def to_dict(self) -> dict:
        return {"stage": self.stage, "round": self.round, "code": self.code,
                "report": self.report.to_dict() if self.report else None}


@dataclass
class Outcome:
    spec: Spec
    attempts: list[Attempt]
    best: Attempt
    stopped: str  # passed | iterations spent | nothing to test | not tested | interrupted
    tokens: int = 0
    seconds: float = 0.0

    @property
    def first(self) -> Attempt:
        return self.attempts[0]

    @property
    def passed(self) -> bool:
        return bool(self.best.report and self.best.report.ok and self.best.report.total)


# --- the model's side ----------------------------------------------------------------------------------


def generate(model, messages: list[dict], *, n: int, temperature: float, max_new_tokens: int,
             seed: int | None = None, stop: tuple[str, ...] = STOPS) -> tuple[list[str], int]:
    """n replies (one batched call when the backend has generate_batch) and the tokens generated; each stops at
    the end of its code block unless `stop` says otherwise."""
    if temperature <= 0:
        n = 1
    batch = getattr(model, "generate_batch", None)
    if callable(batch):
        texts = batch(messages, n=n, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature, seed=seed)
        usage = getattr(model, "last_usage", None)
        return texts, usage.completion_tokens if usage else 0
    texts, tokens = [], 0
    for _ in range(n):
        texts.append("".join(model.stream(messages, max_new_tokens=max_new_tokens, stop=stop,
                                          temperature=temperature)))
        usage = getattr(model, "last_usage", None)
        tokens += usage.completion_tokens if usage else 0
    return texts, tokens


def extract_code(reply: str, fn: str) -> str:
    """The Python in a reply: the fenced block that defines `fn` (else the first block, else the reply), cut back
    to the longest head that parses (a reply stopped mid-line still yields its complete functions)."""
    blocks = re.findall(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", reply, flags=re.DOTALL)
    text = next((b for b in blocks if re.search(rf"^\s*def\s+{re.escape(fn)}\s*\(", b, re.M)), None)
    if text is None:
        text = blocks[0] if blocks else reply
    lines = text.rstrip().splitlines()
    # Leading prose before the first import/def is not code.
    start = next((i for i, line in enumerate(lines) if re.match(r"(def|class|import|from|@)\b", line)), 0)
    lines = lines[start:]
    for end in range(len(lines), 0, -1):
        code = "\n".join(lines[:end]).rstrip() + "\n"
        try:
            ast.parse(code)
        except SyntaxError:
            continue
        return code
    return "\n".join(lines) + "\n"


# --- the prompts -----------------------------------------------------------------------------------------
# Each step's prompt is a fixed frame around its inputs plus an instruction. The instructions and any few-shot
# demonstrations are what a compiled DSPy program (assistant.program, `assistant optimize`) changes; the frame
# is shared, so the default Prompts() renders exactly the hand-written prompts.

STEPS = ("design", "generate", "repair")
STEP_INPUTS = {"design": ("task", "fn"), "generate": ("stub",), "repair": ("stub", "code", "feedback")}
INSTRUCTIONS = {
    "design": "Write only its signature and a docstring with 3 examples in doctest form (a >>> line with the "
              "call, the expected result on the next line). No body. One ```python block.",
    "generate": "Complete the Python function below. Reply with the whole function in one ```python block.",
    "repair": "Fix the function. Reply with the whole corrected function in one ```python block.",
}


def render_step(step: str, inputs: dict, instructions: dict[str, str]) -> list[dict]:
    """One step's request as chat messages: the frame filled with `inputs` and the step's instruction."""
    if step == "design":
        return [{"role": "user", "content": f"Design a Python function for this task: {inputs['task'].strip()}\n"
                 f"Name the function {inputs['fn']}. {instructions['design']}"}]
    generate = [{"role": "user", "content": f"{instructions['generate']}\n\n```python\n"
                 f"{inputs['stub'].rstrip()}\n```"}]
    if step == "generate":
        return generate
    if step == "repair":
        return generate + [
            {"role": "assistant", "content": f"```python\n{inputs['code'].rstrip()}\n```"},
            {"role": "user", "content": f"Testing this function on the examples failed:\n{inputs['feedback']}\n\n"
             f"{instructions['repair']}"}]
    raise RepairError(f"unknown step {step!r}")


@dataclass
class Prompts:
    """What the loop says to the model at each step: an instruction per step and few-shot demonstrations
    (earlier requests with the reply that worked). Prompts() is the hand-written default;
    assistant.program.load_prompts(FILE) gives a compiled program's."""

    instructions: dict[str, str] = field(default_factory=lambda: dict(INSTRUCTIONS))
    demos: dict[str, list[dict]] = field(default_factory=dict)  # step -> [{input fields..., "reply": text}]
    name: str = "default"

    def messages(self, step: str, inputs: dict) -> list[dict]:
        instructions = {**INSTRUCTIONS, **self.instructions}
        out: list[dict] = []
        for demo in self.demos.get(step, []):
            reply = demo["reply"].rstrip()
            if reply.count("```") % 2:  # a reply cut at the closing fence (the stop string) is shown closed
                reply += "\n```"
            out += render_step(step, demo, instructions) + [{"role": "assistant", "content": reply}]
        return out + render_step(step, inputs, instructions)


DEFAULT_PROMPTS = Prompts()


def prompts_for(path: str | None, log: Callable[[str], None] | None = None) -> Prompts:
    """The loop's prompts: a compiled program's (`--program FILE`, the repair_program setting), else the
    hand-written ones (DSPy is imported only for a program). A bad file is a one-line RepairError."""
    if not path:
        return DEFAULT_PROMPTS
    from assistant.program import describe, load_prompts

    try:
        prompts = load_prompts(path)
    except AssistantError as exc:
        raise RepairError(str(exc)) from None
    if log is not None:
        log(f"program {path}: {describe(prompts)}")
    return prompts


def task_prompt(spec: Spec, prompts: Prompts = DEFAULT_PROMPTS) -> list[dict]:
    return prompts.messages("generate", {"stub": spec.code})


def repair_prompt(spec: Spec, attempt: Attempt, prompts: Prompts = DEFAULT_PROMPTS) -> list[dict]:
    summary = attempt.report.summary() if attempt.report else "it does not work"
    return prompts.messages("repair", {"stub": spec.code, "code": attempt.code, "feedback": summary})


def design(model, task: str, fn: str | None, *, max_new_tokens: int = 256,
           prompts: Prompts = DEFAULT_PROMPTS) -> Spec:
    """Ask the model for a signature and doctest examples for a task in words; the stub keeps the task as the
    docstring's first paragraph and the model's examples after it."""
    name = fn or "solve"
    texts, _ = generate(model, prompts.messages("design", {"task": task, "fn": name}),
                        n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    return spec_from_design(texts[0], task, name)


def spec_from_design(reply: str, task: str, name: str) -> Spec:
    """The spec a design reply describes: its def line, the task as the docstring, the reply's examples."""
    code = extract_code(reply, name)
    try:
        funcs = [n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)]
    except SyntaxError:
        funcs = []
    chosen = next((f for f in funcs if f.name == name), funcs[0] if funcs else None)
    if chosen is None:
        raise RepairError("the design step produced no function signature; give --signature (and --doctests)")
    header = code.splitlines()[chosen.lineno - 1].strip()
    if not header.endswith(":"):
        header = f"def {chosen.name}(*args):"
    examples = [line for line in (ast.get_docstring(chosen) or "").splitlines()]
    return Spec.from_stub(stub_from(header, task, [], doc_tail=examples), chosen.name, task)


# --- the loop ------------------------------------------------------------------------------------------


Tester = Callable[[str], TestReport]


def visible_tester(spec: Spec, box, *, timeout: float = 10.0) -> Tester:
    """Test a candidate against the spec's examples in the sandbox (the stub first: it carries imports and
    helpers; the candidate's definition replaces the stub's)."""

    def test(code: str) -> TestReport:
        missing = undefined(code, spec.fn, len(spec.checks))
        if missing:
            return missing
        return run_checks(code, spec.checks, fn=spec.fn, box=box, timeout=timeout,
                          prelude=spec.code.rstrip() + "\n\n")

    return test


def undefined(code: str, fn: str, total: int = 0) -> TestReport | None:
    """A report saying the candidate does not define `fn` itself (the stub in front of it would otherwise
    stand in for it), or None when it does."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        if re.search(rf"^\s*(async\s+)?def\s+{re.escape(fn)}\s*\(", code, re.M):
            return None  # the runner reports the syntax error with its line
        return TestReport(total=total, error=f"NameError: the reply defines no function named {fn}")
    if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn for n in tree.body):
        return None
    return TestReport(total=total, error=f"NameError: the reply defines no function named {fn}")


def seed_for(spec: Spec, stage: str, round_: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{spec.fn}\0{spec.code}\0{stage}\0{round_}".encode()).digest()[:4], "big")


class RepairLoop:
    def __init__(self, model, config: RepairConfig, tester: Tester | None, *,
                 log: Callable[[str], None] | None = None, prompts: Prompts = DEFAULT_PROMPTS):
        self.model = model
        self.config = config
        self.tester = tester
        self.prompts = prompts
        self.log = log or (lambda line: None)
        self.tokens = 0

    def _draw(self, spec: Spec, messages: list[dict], stage: str, round_: int, n: int,
              temperature: float) -> list[Attempt]:
        texts, tokens = generate(self.model, messages, n=n, temperature=temperature,
                                 max_new_tokens=self.config.max_new_tokens, seed=seed_for(spec, stage, round_))
        self.tokens += tokens
        return [Attempt(extract_code(t, spec.fn), stage, round_, output=t) for t in texts]

    def _test(self, attempts: list[Attempt]) -> None:
        for a in attempts:
            if self.tester is not None:
                a.report = self.tester(a.code)

    def run(self, spec: Spec) -> Outcome:
        cfg = self.config
        start = time.monotonic()
        first_temp = 0.0 if cfg.decode == "greedy" else cfg.temperature
        self.log(f"generating a first candidate ({cfg.decode})")
        attempts = self._draw(spec, task_prompt(spec, self.prompts), "first", 0, 1, first_temp)
        best = attempts[0]

        def finish(stopped: str) -> Outcome:
            return Outcome(spec, attempts, best, stopped, self.tokens, time.monotonic() - start)

        if not cfg.test or self.tester is None:
            return finish("not tested")
        try:
            self._test(attempts)
            if not best.report.total:
                self.log("no examples to test against: keeping the first candidate that runs")
            else:
                self.log(f"first candidate: {self._said(best)}")
            if self._done(best):
                return finish(self._done(best))
            if cfg.candidates > 1:
                self.log(f"sampling {cfg.candidates - 1} more candidates")
                more = self._draw(spec, task_prompt(spec, self.prompts), "sample", 0, cfg.candidates - 1,
                                  cfg.temperature)
                self._test(more)
                attempts += more
                best = self._best(attempts)
                self.log(f"best of {len(attempts)}: {self._said(best)}")
                if self._done(best):
                    return finish(self._done(best))
            seen: set[str] = set()
            last = best.report.signature()
            for round_ in range(1, cfg.iters + 1):
                stuck = last in seen
                seen.add(last)
                if stuck:
                    self.log(f"round {round_}: the same failure again; regenerating at temperature "
                             f"{cfg.stuck_temperature:g}")
                    new = self._draw(spec, task_prompt(spec, self.prompts), "regenerate", round_, 1,
                                     cfg.stuck_temperature)
                else:
                    temp = 0.0 if round_ == 1 else cfg.temperature
                    self.log(f"round {round_}: repairing ({best.report.summary(120).splitlines()[0]})")
                    new = self._draw(spec, repair_prompt(spec, best, self.prompts), "repair", round_, 1, temp)
                self._test(new)
                attempts += new
                best = self._best(attempts)
                last = new[0].report.signature()
                self.log(f"round {round_}: {self._said(new[0])}")
                if self._done(best):
                    return finish(self._done(best))
            return finish("iterations spent")
        except KeyboardInterrupt:
            best = self._best(attempts)
            return finish("interrupted")

    @staticmethod
    def _done(best: Attempt) -> str | None:
        """Why to stop now: every example passes, or there are none and the code runs; else None."""
        r = best.report
        if r is None or not r.ok:
            return None
        return "passed" if r.total else "nothing to test"

    @staticmethod
    def _best(attempts: list[Attempt]) -> Attempt:
        # max() keeps the first of equals: the greedy first candidate unless another is strictly better.
        return max(attempts, key=lambda a: a.score)

    @staticmethod
    def _said(a: Attempt) -> str:
        r = a.report
        if r is None:
            return "not tested"
        if r.error:
            return r.error.splitlines()[0][:120]
        return f"{r.passed}/{r.total} examples pass"


# --- output --------------------------------------------------------------------------------------------

MODES = ("function", "imports", "standalone")


def _top_level(code: str, *, skip: str | None = None) -> tuple[list[str], list[str]]:
    """(import statements, definitions: functions, classes and module-level assignments) of a module, as
    source text; `skip` leaves out the function of that name."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [], [code.rstrip()]
    lines = code.splitlines()
    imports, defs = [], []
    for node in tree.body:
        start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        segment = "\n".join(lines[start - 1: node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(segment)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name != skip:
                defs.append(segment)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            defs.append(segment)
    return imports, defs


def _ordered_imports(imports: list[str]) -> list[str]:
    unique = list(dict.fromkeys(imports))
    return [i for i in unique if i.startswith("from __future__")] + \
        [i for i in unique if not i.startswith("from __future__")]


def clean_docstring(code: str, fn: str) -> str:
    """Drop the doctest examples (>>> lines and the results below them) from fn's docstring, editing the source
    lines themselves (quotes, escapes and indentation stay as written); the code unchanged if that fails."""
    tree = ast.parse(code)
    node = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name == fn), None)
    if node is None or not node.body:
        return code
    first = node.body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return code
    lines = code.splitlines()
    head, tail = first.lineno - 1, first.end_lineno - 1  # the lines holding the opening and closing quotes
    kept, in_example = [], False
    for i in range(head + 1, tail):
        stripped = lines[i].strip()
        if stripped.startswith(">>>"):
            in_example = True
            continue
        if in_example and stripped:
            continue  # the example's expected result
        in_example = False
        kept.append(lines[i])
    while kept and not kept[-1].strip():
        kept.pop()
    new = lines[: head + 1] + kept + lines[tail:]
    text = "\n".join(new) + "\n"
    try:
        ast.parse(text)
    except SyntaxError:
        return code
    return text


def cli_block(code: str, fn: str) -> str:
    """An argparse command line for fn: positionals for its parameters (optional when they have defaults,
    any number for *args), --options for keyword-only ones; values read as Python literals, else as text."""
    tree = ast.parse(code)
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == fn)
    a = node.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    doc = ((ast.get_docstring(node) or fn).strip().splitlines() or [fn])[0]
    lines = ["", "", "def _cli_value(text):", "    try:", "        return ast.literal_eval(text)",
             "    except (ValueError, SyntaxError):", "        return text", "", "",
             "def _cli_main(argv=None):", f"    parser = argparse.ArgumentParser(description={doc!r})"]
    call = []
    for arg, default in zip(positional, defaults):
        extra = "" if default is None else f", nargs='?', default={ast.unparse(default)}"
        lines.append(f"    parser.add_argument({arg.arg!r}, type=_cli_value{extra}, help='a Python literal or text')")
        call.append(f"args.{arg.arg}")
    if a.vararg:
        lines.append(f"    parser.add_argument({a.vararg.arg!r}, type=_cli_value, nargs='*')")
        call.append(f"*args.{a.vararg.arg}")
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        extra = ", required=True" if default is None else f", default={ast.unparse(default)}"
        lines.append(f"    parser.add_argument('--{arg.arg.replace('_', '-')}', dest={arg.arg!r}, type=_cli_value{extra})")
        call.append(f"{arg.arg}=args.{arg.arg}")
    run = f"{fn}({', '.join(call)})"
    if isinstance(node, ast.AsyncFunctionDef):
        run = f"asyncio.run({run})"
    lines += ["    args = parser.parse_args(argv)", f"    print({run})", "", "",
              'if __name__ == "__main__":', "    _cli_main()"]
    return "\n".join(lines) + "\n"


def render(code: str, spec: Spec, *, mode: str = "function", clean_doc: bool = False) -> str:
    """The result as the user asked for it: the function (with the helpers and constants it defined), the same
    with its imports, or a runnable script with a command line."""
    if mode not in MODES:
        raise RepairError(f"unknown output mode {mode!r}")
    imports, defs = _top_level(code)
    try:
        ast.parse(spec.code)
        stub_imports, stub_defs = _top_level(spec.code, skip=spec.fn)
    except SyntaxError:
        stub_imports, stub_defs = [], []
    body = "\n\n\n".join(defs) + "\n"
    if clean_doc:
        try:
            body = clean_docstring(body, spec.fn)
        except SyntaxError:
            pass
    if mode == "function":
        return body
    wanted = stub_imports + imports
    if mode == "imports":
        return ("\n".join(_ordered_imports(wanted)) + "\n\n\n" if wanted else "") + body
    # standalone: the stub's own helpers too (the function may call them), then a command line.
    needs = ["import argparse", "import ast"] + (["import asyncio"] if f"async def {spec.fn}(" in body else [])
    wanted = _ordered_imports(wanted + needs)
    head = "#!/usr/bin/env python3\n"
    if spec.task.strip():
        head += "".join(f"# {line}\n" for line in textwrap.wrap(spec.task.strip(), 100)) + "\n"
    helpers = [d for d in stub_defs if d not in defs]
    text = head + "\n".join(wanted) + "\n\n\n" + ("\n\n\n".join(helpers) + "\n\n\n" if helpers else "") + body
    try:
        return text + cli_block(body, spec.fn)
    except (StopIteration, SyntaxError):
        return text


# --- one request, from any entry point -----------------------------------------------------------------


@dataclass
class Request:
    task: str = ""
    fn: str | None = None
    signature: str | None = None
    doctests: list[str] = field(default_factory=list)
    stub: str | None = None  # a whole stub (signature, docstring, imports) instead of the above


def make_spec(model, request: Request, config: RepairConfig, log: Callable[[str], None],
              prompts: Prompts = DEFAULT_PROMPTS) -> Spec:
    """The spec from what the user gave: a stub; a signature (and doctests); or a task the model designs."""
    if request.stub:
        return Spec.from_stub(request.stub, request.fn, request.task)
    if request.signature:
        return Spec.from_stub(stub_from(request.signature, request.task, request.doctests), request.fn, request.task)
    if not request.task.strip():
        raise RepairError("nothing to build: give a task (--task) or a signature (--signature)")
    if not config.design:
        if not request.fn:
            raise RepairError("--no-design needs --fn (the function's name) or --signature")
        return Spec.from_stub(stub_from(f"def {request.fn}(*args)", request.task, request.doctests), request.fn,
                              request.task)
    log("designing a signature and examples")
    spec = design(model, request.task, request.fn, max_new_tokens=min(config.max_new_tokens, 256),
                  prompts=prompts)
    if request.doctests:  # the user's examples join the model's
        spec = Spec(spec.fn, spec.code, spec.checks + Spec.from_stub(
            stub_from(f"def {spec.fn}(*args)", "", request.doctests), spec.fn).checks, spec.task)
    log(f"design: {spec.code.splitlines()[0]} with {len(spec.checks)} examples")
    return spec


def solve(model, box, request: Request, config: RepairConfig, *, log: Callable[[str], None] | None = None,
          prompts: Prompts = DEFAULT_PROMPTS) -> Outcome:
    """Design (if needed), then the loop, testing in `box`'s sandbox, with the default prompts or a compiled
    program's."""
    log = log or (lambda line: None)
    spec = make_spec(model, request, config, log, prompts)
    tester = visible_tester(spec, box, timeout=config.timeout) if config.test else None
    return RepairLoop(model, config, tester, log=log, prompts=prompts).run(spec)


def outcome_record(outcome: Outcome) -> dict:
    """The loop's result as the audit log records it (a "repair" record; the dashboard's pass rate)."""
    r = outcome.best.report
    return {"fn": outcome.spec.fn, "passed": outcome.passed, "stopped": outcome.stopped,
            "examples_passed": r.passed if r else 0, "examples_total": r.total if r else 0,
            "candidates": len(outcome.attempts), "tokens": outcome.tokens, "seconds": round(outcome.seconds, 2)}


def verdict(outcome: Outcome) -> str:
    """One line on how the result stands against its examples."""
    r = outcome.best.report
    if r is None:
        return "not tested (--no-test)"
    if outcome.stopped == "nothing to test":
        return "no examples to test against: the code was not checked"
    if r.error:
        return f"no candidate passed: the best one fails with {r.error.splitlines()[0][:160]}"
    status = "passes" if r.ok else "best candidate passes"
    return (f"{status} {r.passed}/{r.total} examples ({len(outcome.attempts)} candidates, {outcome.tokens} tokens, "
            f"{outcome.seconds:.1f} s)")
