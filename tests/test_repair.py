"""The repair loop with a scripted model, the doctest runner in the real sandbox, and output modes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from assistant import sandbox
from assistant.doctest_runner import run_checks
from assistant.examples import extract_checks
from assistant.models.scripted import ScriptedModel
from assistant.repair import (RepairConfig, RepairLoop, Request, Spec, clean_docstring, extract_code, render,
                              solve, stub_from, visible_tester)

STUB = stub_from("def add(a: int, b: int) -> int", "Add two numbers.", ["add(1, 2) == 3", "add(2, 2) == 4"])
RIGHT = "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"
WRONG = "```python\ndef add(a: int, b: int) -> int:\n    return a - b\n```"
HALF = "```python\ndef add(a: int, b: int) -> int:\n    return 4\n```"  # passes add(2, 2) only
BROKEN = "```python\ndef add(a, b):\n    return a +\n```"


@pytest.fixture
def box(workspace):
    b = sandbox.Sandbox(workspace, "auto")
    yield b
    b.close()


def loop(outputs, box, **config):
    model = ScriptedModel(outputs)
    spec = Spec.from_stub(STUB)
    outcome = RepairLoop(model, RepairConfig(**config), visible_tester(spec, box)).run(spec)
    return outcome, model


def test_stub_checks_come_from_the_doctests():
    spec = Spec.from_stub(STUB)
    assert spec.fn == "add"
    assert [(c.source, c.want) for c in spec.checks] == [("add(1, 2)", "3"), ("add(2, 2)", "4")]


def test_first_candidate_fails_second_passes_and_is_returned(box):
    outcome, model = loop([WRONG, RIGHT], box, candidates=2, iters=0)
    assert outcome.stopped == "passed"
    assert outcome.best is outcome.attempts[1]
    assert outcome.best.stage == "sample" and "a + b" in outcome.best.code
    assert outcome.first.report.passed == 0
    assert not model.outputs  # nothing asked for after the pass


def test_repair_prompt_carries_the_code_and_what_failed(box):
    outcome, model = loop([WRONG, RIGHT], box, candidates=1, iters=2)
    assert outcome.passed and outcome.best.stage == "repair"
    repair_messages = model.received[1]
    assert "return a - b" in repair_messages[-2]["content"]
    assert "add(1, 2) returned -1, expected 3" in repair_messages[-1]["content"]


def test_the_same_failure_twice_switches_to_regenerating(box):
    outcome, model = loop([WRONG, WRONG, RIGHT], box, candidates=1, iters=3)
    assert [a.stage for a in outcome.attempts] == ["first", "repair", "regenerate"]
    assert outcome.passed
    # The regeneration starts from the task again, not from the failing code.
    assert len(model.received[2]) == 1 and "Complete the Python function" in model.received[2][0]["content"]


def test_keeps_the_best_candidate_not_the_last(box):
    outcome, _ = loop([HALF, BROKEN, WRONG], box, candidates=1, iters=2)
    assert outcome.stopped == "iterations spent"
    assert outcome.best is outcome.first and "return 4" in outcome.best.code
    assert outcome.best.report.passed == 1
    assert outcome.attempts[-1].report.passed == 0


def test_a_later_candidate_must_do_strictly_better_to_replace_the_first(box):
    outcome, _ = loop([HALF, HALF.replace("return 4", "return 4  # same")], box, candidates=2, iters=0)
    assert outcome.best is outcome.first


def test_no_examples_keeps_the_first_candidate_that_runs(box):
    model = ScriptedModel([RIGHT])
    spec = Spec.from_stub(stub_from("def add(a, b)", "Add."))
    outcome = RepairLoop(model, RepairConfig(candidates=3), visible_tester(spec, box)).run(spec)
    assert outcome.stopped == "nothing to test" and len(outcome.attempts) == 1


def test_solve_designs_a_spec_when_only_a_task_is_given(box):
    design = ('```python\ndef double(x: int) -> int:\n    """Double x.\n    >>> double(2)\n    4\n    """\n```')
    model = ScriptedModel([design, "```python\ndef double(x: int) -> int:\n    return 2 * x\n```"])
    outcome = solve(model, box, Request("double a number", "double"), RepairConfig(candidates=1))
    assert outcome.spec.fn == "double"
    assert [(c.source, c.want) for c in outcome.spec.checks] == [("double(2)", "4")]
    assert outcome.passed


def test_extract_code_takes_the_block_with_the_function_and_cuts_a_broken_tail():
    reply = "Here:\n```python\nx = 1\n```\nand\n```python\nimport math\ndef f(x):\n    return math.sqrt(x)\ndef g(:\n"
    code = extract_code(reply, "f")
    assert code.startswith("import math") and "def g" not in code
    compile(code, "<test>", "exec")


# --- the doctest runner in the sandbox -------------------------------------------------------------------


def test_runner_reports_a_syntax_error_with_its_line(box):
    report = run_checks("def f(x):\n    return x +\n", extract_checks(">>> f(1)\n2", "f"), fn="f", box=box)
    assert not report.ok and report.error.startswith("SyntaxError") and "line 2" in report.error


def test_runner_stops_an_endless_loop(box):
    report = run_checks("def f(x):\n    while True:\n        pass\n", extract_checks(">>> f(1)\n2", "f"), fn="f",
                        box=box, per_check=1.0)
    assert not report.ok
    assert "timed out" in report.results[0].error


def test_runner_survives_a_flood_of_output(box):
    code = "import os\ndef f(x):\n    print('y' * 5_000_000)\n    os.write(1, b'z' * 3_000_000)\n    return 2\n"
    report = run_checks(code, extract_checks(">>> f(1)\n2", "f"), fn="f", box=box)
    assert report.ok, report.summary()


def test_runner_summary_names_the_exception_and_line(box):
    code = "def f(x):\n    y = x[3]\n    return y\n"
    report = run_checks(code, extract_checks(">>> f([1])\n1", "f"), fn="f", box=box)
    assert "IndexError" in report.summary() and "line 2: y = x[3]" in report.summary()


def test_runner_compares_values_not_spelling(box):
    checks = extract_checks(">>> f()\n(1.0, 'a')\n>>> (f() == (1, 'a'))\nTrue\n>>> f()[1]\n'a'", "f")
    report = run_checks("def f():\n    return (1.0000000001, 'a')\n", checks, fn="f", box=box)
    # Close floats pass, repr spelling does not matter; the exact == the example itself writes does not pass.
    assert [r.passed for r in report.results] == [True, False, True]


# --- output modes ---------------------------------------------------------------------------------------

CODE = "import math\nfrom typing import List\n\n\ndef hyp(a: float, b: float) -> float:\n" \
       '    """Hypotenuse.\n    >>> hyp(3, 4)\n    5.0\n    """\n    return math.sqrt(a * a + b * b)\n'


@pytest.mark.parametrize("mode", ["function", "imports", "standalone"])
def test_every_output_mode_compiles_and_runs(mode, tmp_path):
    spec = Spec.from_stub(stub_from("def hyp(a: float, b: float) -> float", "Hypotenuse.", ["hyp(3, 4) == 5.0"]))
    text = render(CODE, spec, mode=mode)
    compile(text, "<out>", "exec")
    if mode == "function":
        assert "import" not in text and "def hyp" in text
        ns = {"math": __import__("math")}
        exec(text, ns)
        assert ns["hyp"](3, 4) == 5.0
    elif mode == "imports":
        ns = {}
        exec(text, ns)
        assert ns["hyp"](6, 8) == 10.0
    else:
        script = tmp_path / "hyp.py"
        script.write_text(text)
        done = subprocess.run([sys.executable, str(script), "3", "4"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and done.stdout.strip() == "5.0"
        helped = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=30)
        assert "Hypotenuse." in helped.stdout


def test_clean_doc_drops_the_examples_but_keeps_the_prose():
    cleaned = clean_docstring(CODE, "hyp")
    assert ">>>" not in cleaned and "5.0\n" not in cleaned.split('"""')[1]
    assert "Hypotenuse." in cleaned
    ns = {}
    exec(cleaned, ns)
    assert ns["hyp"](3, 4) == 5.0


def test_profiles():
    fast = RepairConfig.for_profile("fast")
    assert (fast.design, fast.decode, fast.candidates, fast.iters) == (False, "greedy", 1, 2)
    assert RepairConfig.for_profile("fast", iters=4).iters == 4
    with pytest.raises(Exception, match="profile"):
        RepairConfig.for_profile("turbo")


# --- entry points: the agent's tool, /repair, `assistant repair` -----------------------------------------


def test_the_agent_calls_the_repair_tool(make_session):
    from conftest import call

    from assistant.events import Observation

    s = make_session([call("repair", task="Add two numbers.", signature="def add(a: int, b: int) -> int",
                           doctests=["add(1, 2) == 3"]), WRONG, RIGHT, "Done: add returns a + b."], yes=True)
    events = list(s.agent.run_turn("write add"))
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.ok and "return a + b" in obs.text and "passes 1/1 examples" in obs.text
    from assistant.logs.audit import read_records

    verdicts = [r["data"] for r in read_records(s.audit.path) if r["kind"] == "repair"]  # the dashboard's pass rate
    assert verdicts == [{"fn": "add", "passed": True, "stopped": "passed", "examples_passed": 1, "examples_total": 1,
                         "candidates": 2, "tokens": verdicts[0]["tokens"], "seconds": verdicts[0]["seconds"]}]


def test_the_repair_tool_asks_before_running_code(make_session):
    from conftest import call

    from assistant.events import Observation

    s = make_session([call("repair", task="Add two numbers.", signature="def add(a, b)"), "ok"], approval="never")
    events = list(s.agent.run_turn("write add"))
    obs = next(e for e in events if isinstance(e, Observation))
    assert not obs.ok and len(s.model.received) == 2  # refused: the tool never asked the model for code


def test_slash_repair_designs_generates_and_tests(make_session, capsys):
    design = '```python\ndef double(x: int) -> int:\n    """Double x.\n    >>> double(2)\n    4\n    """\n```'
    s = make_session([design, "```python\ndef double(x: int) -> int:\n    return x * 2\n```"])
    text = s.registry.commands["repair"].function("double a number; name it double", s)
    assert "return x * 2" in text and "passes 1/1 examples" in text
    from assistant.logs.audit import read_records

    assert [r["data"]["passed"] for r in read_records(s.audit.path) if r["kind"] == "repair"] == [True]
    assert "designing" in capsys.readouterr().out


def _scripted_file(tmp_path, outputs):
    import json

    path = tmp_path / "model.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return str(path)


def test_cli_repair_standalone_script_runs(tmp_path, workspace, capsys):
    from assistant.cli import main

    model = _scripted_file(tmp_path, [WRONG, RIGHT])
    code = main(["repair", "--model", f"scripted:{model}", "--workspace", str(workspace),
                 "--signature", "def add(a: int, b: int) -> int", "--task", "Add two numbers.",
                 "--doctests", "add(1, 2) == 3", "--candidates", "1", "--standalone"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "passes 1/1 examples" in captured.err
    script = tmp_path / "add.py"
    script.write_text(captured.out)
    done = subprocess.run([sys.executable, str(script), "2", "5"], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "7"


def test_cli_repair_save_profile_writes_the_file_and_fails_when_nothing_passes(tmp_path, workspace, capsys):
    from assistant.cli import main

    model = _scripted_file(tmp_path, [WRONG, WRONG, WRONG])
    code = main(["repair", "--model", f"scripted:{model}", "--workspace", str(workspace), "--profile", "save",
                 "--signature", "def add(a, b)", "--doctests", "add(1, 2) == 3", "--candidates", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "best candidate passes 0/1 examples" in err
    assert (workspace / "generated" / "add.py").read_text().startswith("def add(")


def test_cli_repair_without_a_task_says_what_to_give(workspace, capsys):
    from assistant.cli import main

    assert main(["repair", "--workspace", str(workspace)]) == 1
    assert "give --task, --signature or --stub" in capsys.readouterr().err


# --- the sanity suite ----------------------------------------------------------------------------------

REFERENCE = {
    "largest": "def largest(xs):\n    return max(xs)\n",
    "is_ipv4": "def is_ipv4(s):\n    p = s.split('.')\n    return len(p) == 4 and all(x.isdigit() and int(x) <= 255 "
               "for x in p)\n",
    "quadratic_roots": "import math\ndef quadratic_roots(a, b, c):\n    d = b * b - 4 * a * c\n    if d < 0:\n"
                       "        return []\n    r = math.sqrt(d)\n    return sorted([(-b - r) / (2 * a), (-b + r) / (2 * a)])\n",
    "reverse_words": "def reverse_words(s):\n    return ' '.join(s.split()[::-1])\n",
    "is_palindrome": "def is_palindrome(s):\n    return s.lower() == s.lower()[::-1]\n",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s.lower())\n",
    "factorial": "import math\ndef factorial(n):\n    return math.factorial(n)\n",
    "fizzbuzz": "def fizzbuzz(n):\n    return 'FizzBuzz' if n % 15 == 0 else 'Fizz' if n % 3 == 0 else 'Buzz' "
                "if n % 5 == 0 else str(n)\n",
    "mean": "def mean(xs):\n    return sum(xs) / len(xs)\n",
    "celsius_to_fahrenheit": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32\n",
}


def test_the_sanity_suite_is_right_about_reference_solutions(box):
    from assistant.repair_suite import SUITE, hidden_checks

    assert len(SUITE) == 10 and set(REFERENCE) == {t[0] for t in SUITE}
    for name, task, signature, visible, hidden in SUITE:
        spec = Spec.from_stub(stub_from(signature, task, visible))
        assert len(spec.checks) == len(visible), name
        assert visible_tester(spec, box)(REFERENCE[name]).ok, name
        assert run_checks(REFERENCE[name], hidden_checks(hidden), fn=name, box=box).ok, name
        wrong = f"def {name}(*args):\n    return None\n"
        assert not run_checks(wrong, hidden_checks(hidden), fn=name, box=box).ok, name


def test_run_suite_grades_with_the_hidden_asserts(box, monkeypatch, capsys):
    from assistant import repair_suite

    monkeypatch.setattr(repair_suite, "SUITE", repair_suite.SUITE[:2])
    # largest: right at once. is_ipv4: passes the visible examples but not the hidden ones (no digit check).
    cheat = "```python\ndef is_ipv4(s):\n    p = s.split('.')\n    return len(p) == 4 and '256' not in s\n```"
    model = ScriptedModel([f"```python\n{REFERENCE['largest']}```", cheat])
    assert repair_suite.run_suite(model, box, RepairConfig(candidates=1, iters=0)) == 1
    out = capsys.readouterr().out
    assert "largest" in out and "1/2 tasks pass their hidden tests" in out
    row = next(line for line in out.splitlines() if line.startswith("is_ipv4"))
    assert row.split()[1:3] == ["3/3", "3/4"]


def test_ctrl_c_during_repair_keeps_the_best_candidate_so_far(tmp_path, workspace, capsys):
    from assistant.cli import main

    model = _scripted_file(tmp_path, [HALF, {"text": "```python\ndef add(", "raise": "KeyboardInterrupt"}])
    code = main(["repair", "--model", f"scripted:{model}", "--workspace", str(workspace),
                 "--signature", "def add(a: int, b: int) -> int", "--doctests", "add(1, 2) == 3", "add(2, 2) == 4"])
    captured = capsys.readouterr()
    assert code == 130 and "return 4" in captured.out and "interrupted" in captured.err


def test_clean_doc_keeps_quotes_escapes_and_indentation_as_written():
    code = "def f(x):\n  '''Return \"yes\" for \\\\d.\n\n  >>> f(1)\n  'yes'\n  '''\n  return 'yes'\n"
    cleaned = clean_docstring(code, "f")
    assert cleaned == "def f(x):\n  '''Return \"yes\" for \\\\d.\n  '''\n  return 'yes'\n"
    compile(cleaned, "<test>", "exec")


def test_standalone_handles_defaults_varargs_and_keyword_only_parameters(tmp_path):
    code = ("def total(a, b=2, *rest, scale: float = 1.0, label):\n"
            "    return f'{label}: {(a + b + sum(rest)) * scale}'\n")
    spec = Spec.from_stub(stub_from("def total(a, b=2, *rest, scale: float = 1.0, label)",
                                    'Sum them; say "hi" in C:\\Users', []), task='Sum them; say "hi"')
    script = tmp_path / "total.py"
    script.write_text(render(code, spec, mode="standalone"))
    runs = {("1", "--label", "x"): "x: 3.0", ("1", "5", "1", "1", "--scale", "2", "--label", "y"): "y: 16"}
    for argv, want in runs.items():
        done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=30)
        assert done.stdout.strip() == want, done.stderr


def test_a_task_with_quotes_and_backslashes_makes_a_valid_stub():
    stub = stub_from("def f(p: str) -> bool", 'Is """p""" under C:\\Users?', ["f('a==b') == True"])
    compile(stub, "<stub>", "exec")
    spec = Spec.from_stub(stub)
    assert [(c.source, c.want) for c in spec.checks] == [("f('a==b')", "True")]


def test_a_reply_that_opens_with_prose_keeps_its_code():
    from assistant.models import cut_at_stops

    reply = "Here is the fix:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds."
    pieces = [reply[i:i + 3] for i in range(0, len(reply), 3)]
    text = "".join(cut_at_stops(iter(pieces), ["\n```"]))
    assert text.endswith("return a + b") and "It adds" not in text
    assert "return a + b" in extract_code(text, "add")


def test_a_reply_without_the_function_does_not_count_as_running(box):
    outcome, _ = loop(["Sorry, I cannot do that.", "```python\ndef plus(a, b):\n    return a + b\n```"], box,
                      candidates=2, iters=0)
    assert [a.report.error for a in outcome.attempts] == ["NameError: the reply defines no function named add"] * 2
    assert outcome.stopped == "iterations spent" and not outcome.passed
