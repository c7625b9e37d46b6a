"""Step 9: the repair loop as a DSPy program: the LM adapter, `assistant optimize`, and `--program`."""

import io
import json
import os
import re
import subprocess
import sys

import dspy
import pytest

from assistant import program as P
from assistant import sandbox
from assistant.config import load_settings
from assistant.errors import AssistantError
from assistant.humaneval import BenchConfig
from assistant.models.scripted import ScriptedModel
from assistant.optimize import OptimizeConfig, file_tasks, optimize, split_tasks, stub_of
from assistant.repair import DEFAULT_PROMPTS, Prompts, RepairConfig, RepairLoop, Spec, visible_tester

STUBS = {
    "double": 'def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n    >>> double(0)\n    0\n    """\n',
    "inc": 'def inc(x):\n    """One more.\n    >>> inc(1)\n    2\n    """\n',
    "neg": 'def neg(x):\n    """Minus x.\n    >>> neg(3)\n    -3\n    """\n',
}
RIGHT = {"double": "return x * 2", "inc": "return x + 1", "neg": "return -x"}


def reply(fn, body):
    return f"```python\ndef {fn}(x):\n    {body}\n```"


class ByTask:
    """A scripted model that answers by which function the request is about (the last stub in it), so the
    order an optimizer visits tasks in does not matter: right for the functions in `right`, wrong otherwise."""

    name = "bytask"

    def __init__(self, right):
        self.right = set(right)
        self.received = []
        self.last_usage = None

    def stream(self, messages, *, max_new_tokens=256, stop=(), temperature=0.0, grammar=None):
        from assistant.models import Usage

        self.received.append(messages)
        text = messages[-1]["content"]
        if messages[-1]["content"].startswith("Testing this function"):
            text = messages[-3]["content"]
        fn = [name for name in STUBS if f"def {name}(" in text][-1]
        self.last_usage = Usage(0, 5, 0.01)
        return iter([reply(fn, RIGHT[fn] if fn in self.right else "return None")])


@pytest.fixture
def box(tmp_path):
    b = sandbox.Sandbox(tmp_path, "auto")
    yield b
    b.close()


def test_the_adapter_round_trips_through_the_scripted_model():
    model = ScriptedModel(["```python\ndef double(x):\n    return x * 2\n```", "[[ ## answer ## ]]\nfour"])
    lm = P.make_lm(model, max_new_tokens=64)
    with dspy.context(lm=lm, adapter=P.CodeAdapter()):
        out = dspy.Predict(P._signature("generate"))(stub=STUBS["double"], config={"temperature": 0.5, "seed": 7})
        # Our step: the same messages as the hand-written prompt, and the reply whole.
        assert model.received[0] == DEFAULT_PROMPTS.messages("generate", {"stub": STUBS["double"]})
        assert out.reply == "```python\ndef double(x):\n    return x * 2\n```"
        # Anyone else's signature (an optimizer's proposer) goes through DSPy's chat format.
        answer = dspy.Predict("question -> answer")(question="2+2?")
        assert answer.answer == "four"
        assert "[[ ## question ## ]]" in model.received[1][-1]["content"]
    assert lm.assistant_engine.calls == 2 and lm.assistant_engine.tokens > 0
    assert "litellm" not in sys.modules  # DSPy reached the model through our engine only: no route to a network


def test_the_engine_passes_sampling_settings_and_demos_render_as_turns():
    seen = {}

    class Recorder(ScriptedModel):
        def generate_batch(self, messages, *, n, max_new_tokens, stop=(), temperature=0.0, seed=None):
            seen.update(n=n, max_new_tokens=max_new_tokens, stop=tuple(stop), temperature=temperature, seed=seed,
                        messages=messages)
            return ["```python\ndef inc(x):\n    return x + 1\n```"]

    lm = P.make_lm(Recorder(), max_new_tokens=99)
    demo = {"stub": STUBS["double"], "reply": reply("double", RIGHT["double"])}
    predictor = dspy.Predict(P._signature("generate"))
    predictor.demos = [dspy.Example(**demo)]
    with dspy.context(lm=lm, adapter=P.CodeAdapter()):
        predictor(stub=STUBS["inc"], config={"temperature": 0.7, "seed": 11, "stop": ["\n```"]})
    assert seen["temperature"] == 0.7 and seen["seed"] == 11 and seen["stop"] == ("\n```",) and seen["n"] == 1
    assert seen["max_new_tokens"] == 99
    # The demonstration is an earlier request with its answer, in the same frame.
    assert seen["messages"] == (DEFAULT_PROMPTS.messages("generate", {"stub": STUBS["double"]})
                                + [{"role": "assistant", "content": demo["reply"]}]
                                + DEFAULT_PROMPTS.messages("generate", {"stub": STUBS["inc"]}))


def test_the_program_repairs_with_feedback(box):
    model = ScriptedModel([reply("double", "return x + 2"), reply("double", "return x * 2")])
    with dspy.context(lm=P.make_lm(model), adapter=P.CodeAdapter()), P.checking(box):
        out = P.RepairProgram(rounds=1)(stub=STUBS["double"], fn="double")
    assert out.ok and out.passed == 2 and "x * 2" in out.code
    assert model.received[1][-1]["content"].startswith("Testing this function on the examples failed:\ndouble(0) returned 2, expected 0")
    assert P.metric(None, out) == 1.0


def _tasks_file(tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"stub": STUBS[fn], "fn": fn, "id": fn}) + "\n" for fn in STUBS))
    return path


def test_optimize_on_three_tasks_saves_a_program_that_loads_and_runs(tmp_path, box):
    settings = load_settings({"workspace": str(tmp_path)})
    out = tmp_path / "prog.json"
    cfg = OptimizeConfig(split=str(_tasks_file(tmp_path)), limit=3, val=0.34, demos=2, out=str(out))
    model = ByTask(right={"double", "inc"})  # neg never passes: no demonstration can come from it
    text = io.StringIO()
    meta = optimize(settings, cfg, model=model, out=text)
    said = text.getvalue()
    assert "tasks: 3" in said and f"saved {out}" in said and "validation (1 tasks" in said
    assert len(meta["train"]) == 2 and len(meta["val"]) == 1 and set(meta["train"] + meta["val"]) == set(STUBS)
    data = json.loads(out.read_text())
    assert data["format"] == "assistant-program" and data["meta"]["optimizer"] == "bootstrap"
    prompts = P.load_prompts(out)
    demos = prompts.demos.get("generate", [])
    passing = {fn for fn in meta["train"] if fn != "neg"}
    # A demonstration per training task that passed, each the model's own passing reply.
    assert sorted(d["reply"] for d in demos) == sorted(reply(fn, RIGHT[fn]) for fn in passing)
    # It runs: the loop with the program's prompts shows the demonstrations before the request.
    runner = ScriptedModel([reply("neg", "return -x")])
    spec = Spec.from_stub(STUBS["neg"])
    outcome = RepairLoop(runner, RepairConfig(candidates=1, iters=0), visible_tester(spec, box),
                         prompts=prompts).run(spec)
    assert outcome.passed
    sent = runner.received[0]
    assert len(sent) == 2 * len(demos) + 1 and sent[-1] == DEFAULT_PROMPTS.messages("generate", {"stub": spec.code})[0]
    # The dashboard's figure.
    from assistant.home import subdir
    from assistant.tui.sources import read_runs

    runs = list((subdir("runs") / "optimize").glob("*.json"))
    assert runs and json.loads(runs[0].read_text())["val_compiled"] is not None
    benches, _ = read_runs(subdir("runs"))
    shown = [b for b in benches if b.name.startswith("optimize bootstrap")]
    assert shown and shown[0].value == meta["val_compiled"]


def test_ctrl_c_while_compiling_saves_nothing(tmp_path):
    out = tmp_path / "prog.json"
    cfg = OptimizeConfig(split=str(_tasks_file(tmp_path)), limit=3, val=0, out=str(out))
    model = ScriptedModel([{"text": "```python\n", "raise": "KeyboardInterrupt"}])
    with pytest.raises(KeyboardInterrupt):
        optimize(load_settings({"workspace": str(tmp_path)}), cfg, model=model, out=io.StringIO())
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_the_loop_with_an_uncompiled_program_behaves_like_the_default(tmp_path, box):
    path = P.save_program(P.RepairProgram(), tmp_path / "plain.json", {"optimizer": "none"})
    prompts = P.load_prompts(path)
    assert prompts.instructions == DEFAULT_PROMPTS.instructions and not prompts.demos
    outputs = [reply("double", "return x + 2"), reply("double", "return x"), reply("double", "return x * 2")]
    runs = []
    for p in (DEFAULT_PROMPTS, prompts):
        model = ScriptedModel(list(outputs))
        spec = Spec.from_stub(STUBS["double"])
        outcome = RepairLoop(model, RepairConfig(candidates=2, iters=1), visible_tester(spec, box),
                             prompts=p).run(spec)
        runs.append((model.received, outcome.best.code, outcome.stopped, [a.stage for a in outcome.attempts]))
    assert runs[0] == runs[1]
    assert runs[0][2] == "passed" and runs[0][3] == ["first", "sample", "repair"]


def test_repair_cli_with_program_matches_the_default(tmp_path):
    stub = tmp_path / "double.py"
    stub.write_text(STUBS["double"])
    script = tmp_path / "s.jsonl"
    outputs = [reply("double", "return x + 2"), reply("double", "return x * 2")]
    prog = P.save_program(P.RepairProgram(), tmp_path / "plain.json", {})
    results = []
    for extra in ([], ["--program", str(prog)]):
        script.write_text("".join(json.dumps(o) + "\n" for o in outputs))
        r = subprocess.run([sys.executable, "-m", "assistant", "repair", "--model", f"scripted:{script}", "--stub",
                            str(stub), "--candidates", "1", *extra], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path, env={**os.environ, "ASSISTANT_WORKSPACE": str(tmp_path)})
        results.append((r.returncode, r.stdout))
        if extra:
            assert "default instruction, 0 demos" in r.stderr
    assert results[0] == results[1] and results[0][0] == 0 and "x * 2" in results[0][1]


def test_bad_program_files_are_one_line_errors(tmp_path):
    with pytest.raises(AssistantError, match="no program file"):
        P.load_prompts(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AssistantError, match="cannot read the program"):
        P.load_prompts(bad)
    bad.write_text(json.dumps({"format": "something-else", "state": {}}))
    with pytest.raises(AssistantError, match="not a program written by"):
        P.load_prompts(bad)
    bad.write_text(json.dumps({"format": "assistant-program", "version": 1, "state": {"generate": {"x": 1}}}))
    with pytest.raises(AssistantError, match="does not fit"):
        P.load_prompts(bad)


def test_tasks_from_files(tmp_path):
    collected = 'import math\n\n\ndef area(r):\n    """Area.\n    >>> area(1) > 3\n    True\n    """\n    return math.pi * r * r\n'
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([
        json.dumps({"prompt": STUBS["inc"], "entry_point": "inc", "task_id": "X/1"}),
        json.dumps({"instruction": "write area", "response": collected}),
        json.dumps({"task": "reverse a string", "fn": "rev"}),
        json.dumps({"response": "def f(x):\n    return x\n"}),  # no doctest: nothing to score it by
        json.dumps(["not", "a", "task"]),
    ]) + "\n")
    tasks = file_tasks(path)
    assert [t["id"] for t in tasks] == ["X/1", "t.jsonl:2", "t.jsonl:3"]
    assert tasks[1]["fn"] == "area" and tasks[1]["stub"].startswith("import math") and "return" not in tasks[1]["stub"]
    assert tasks[2] == {"task": "reverse a string", "fn": "rev", "id": "t.jsonl:3"}
    assert stub_of("def f(x):\n    return x\n") is None
    (tmp_path / "empty.jsonl").write_text(json.dumps({"response": "x = 1"}) + "\n")
    with pytest.raises(AssistantError, match="no usable tasks"):
        file_tasks(tmp_path / "empty.jsonl")
    train, val = split_tasks(tasks, 0.34, seed=0)
    assert len(train) == 2 and len(val) == 1 and split_tasks(tasks, 0.34, seed=0) == (train, val)
    assert split_tasks(tasks[:1], 0.9, seed=0)[0] == tasks[:1]  # something to compile on, always


def test_benchmark_runs_with_a_program_are_kept_apart(tmp_path):
    prog = P.save_program(P.RepairProgram(), tmp_path / "p.json", {})
    plain, with_program = BenchConfig(half="heldout"), BenchConfig(half="heldout", program=str(prog))
    assert plain.key("m") != with_program.key("m") and "prog" in with_program.key("m")


def test_optimize_help_teaches():
    r = subprocess.run([sys.executable, "-m", "assistant", "optimize", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "bootstrap" in r.stdout and "mipro" in r.stdout and "gepa" in r.stdout
    assert "--train-split" in r.stdout and "--program" in r.stdout
    r = subprocess.run([sys.executable, "-m", "assistant", "optimize", "--train-split", "nope.jsonl"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "humaneval-train or a JSONL file" in r.stderr and "Traceback" not in r.stderr


def test_prompts_render_the_hand_written_frame():
    custom = Prompts({"repair": "Mend it."}, {}, "x")
    msgs = custom.messages("repair", {"stub": "def f(): pass", "code": "def f(): return 1", "feedback": "boom"})
    assert msgs[0] == DEFAULT_PROMPTS.messages("generate", {"stub": "def f(): pass"})[0]
    assert msgs[-1]["content"].endswith("boom\n\nMend it.")


class Proposing(ByTask):
    """ByTask for the loop's steps; for an optimizer's own requests (DSPy's chat or JSON format, read from the
    system message) an instruction in every output field."""

    def stream(self, messages, **kwargs):
        from assistant.models import Usage

        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if "Your output fields are" not in system:
            return super().stream(messages, **kwargs)
        self.received.append(messages)
        self.last_usage = Usage(0, 5, 0.01)
        fields = re.findall(r"\d+\. `(\w+)`", system.split("Your output fields are")[1])
        text = f"Write the whole function; check each example by hand first ({len(self.received)})."
        if "JSON" in system:
            return iter([json.dumps({f: text for f in fields})])
        return iter(["".join(f"[[ ## {f} ## ]]\n{text}\n\n" for f in fields) + "[[ ## completed ## ]]"])


@pytest.mark.parametrize("optimizer", ["mipro", "gepa"])
def test_mipro_and_gepa_run_end_to_end_on_the_scripted_model(tmp_path, optimizer):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"stub": STUBS[fn], "fn": fn, "id": f"{fn}{i}"}) + "\n"
                             for i in range(2) for fn in STUBS))
    out = tmp_path / f"{optimizer}.json"
    model = Proposing(right={"double", "inc"})
    cfg = OptimizeConfig(optimizer=optimizer, split=str(tasks), limit=6, val=0.34, trials=3, budget=12, out=str(out))
    meta = optimize(load_settings({"workspace": str(tmp_path)}), cfg, model=model, out=io.StringIO())
    assert meta["optimizer"] == optimizer and meta["val_compiled"] is not None
    # The optimizer asked for instructions in its own format, through the same model.
    assert any(m[0]["role"] == "system" and "Your output fields are" in m[0]["content"] for m in model.received)
    prompts = P.load_prompts(out)
    for step, text in prompts.instructions.items():
        assert text == DEFAULT_PROMPTS.instructions[step] or text.startswith("Write the whole function")


def test_the_repair_program_setting_reaches_slash_repair_and_bad_files_say_so(make_session, tmp_path):
    compiled = P.RepairProgram()
    compiled.generate.demos = [dspy.Example(stub=STUBS["inc"], reply=reply("inc", RIGHT["inc"]))]
    path = P.save_program(compiled, tmp_path / "prog.json", {})
    design = '```python\ndef double(x: int) -> int:\n    """Double x.\n    >>> double(2)\n    4\n    """\n```'
    s = make_session([design, reply("double", RIGHT["double"])], repair_program=str(path))
    text = s.registry.commands["repair"].function("double a number; name it double", s)
    assert "passes 1/1 examples" in text
    sent = s.model.received[-1]  # the generate step, after the design step
    assert sent[0]["content"].endswith(STUBS["inc"].rstrip() + "\n```") and sent[1]["content"] == reply("inc", RIGHT["inc"])
    s2 = make_session([], repair_program=str(tmp_path / "gone.json"))
    assert s2.registry.commands["repair"].function("double a number", s2).startswith("error: no program file at")


def test_a_workspace_config_cannot_set_the_repair_program(workspace):
    (workspace / ".assistant").mkdir(exist_ok=True)
    (workspace / ".assistant" / "config.toml").write_text('repair_program = "/tmp/evil.json"\n')
    assert load_settings({"workspace": str(workspace)}, env={}).repair_program is None


def test_a_demonstration_cut_at_its_stop_string_is_shown_closed():
    cut = "```python\ndef inc(x):\n    return x + 1"  # what generation leaves when it stops at "\n```"
    msgs = Prompts(demos={"generate": [{"stub": STUBS["inc"], "reply": cut}]}).messages("generate", {"stub": "x"})
    assert msgs[1] == {"role": "assistant", "content": cut + "\n```"}


def test_a_program_file_cannot_bring_its_own_model(tmp_path):
    path = P.save_program(P.RepairProgram(), tmp_path / "p.json", {})
    data = json.loads(path.read_text())
    data["state"]["generate"]["lm"] = {"model": "openai/gpt-x", "api_base": "http://evil.example/v1"}
    path.write_text(json.dumps(data))
    program = P.load_program(path)
    assert program.generate.lm is None
