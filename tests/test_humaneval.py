"""HumanEval: the example extractor over all 164 prompts, the grader in the sandbox, and a scripted bench run."""

from __future__ import annotations

import json

import pytest

from assistant import sandbox
from assistant.config import load_settings
from assistant.examples import extract_checks
from assistant.humaneval import BenchConfig, bench_humaneval, grade, grade_completions, leaky_tester, problems

# Measured when the extractor was written: 152 of the 164 prompts yield at least one check. It may grow; a
# change that makes it drop is a regression.
EXTRACTED_AT_LEAST = 152


@pytest.fixture(scope="module")
def probs():
    return problems()


@pytest.fixture
def box(workspace):
    b = sandbox.Sandbox(workspace, "auto")
    yield b
    b.close()


def test_extractor_finds_checks_in_at_least_152_of_164_prompts(probs):
    assert len(probs) == 164
    counts = {tid: len(extract_checks(p["prompt"], p["entry_point"])) for tid, p in probs.items()}
    with_checks = sum(1 for n in counts.values() if n)
    print(f"\n{with_checks}/164 prompts yield at least one check; {sum(counts.values())} checks in all")
    assert with_checks >= EXTRACTED_AT_LEAST


def test_extractor_reads_each_form_of_example(probs):
    forms = {
        "HumanEval/2": ("truncate_number(3.5)", "0.5"),  # >>> doctest
        "HumanEval/76": ("is_simple_power(1, 4)", "True"),  # f(x) => true
        "HumanEval/77": ("iscube(1)", "True"),  # f(x) ==> True
        "HumanEval/94": ("skjkasdkd([0,3,2,1,3,5,7,4,5,5,5,2,181,32,4,32,3,2,32,324,4,3])", "10"),  # For lst = ...
        "HumanEval/112": ('reverse_delete("abcde", "ae")', "('bcd',False)"),  # For s = .., c = .. the result
        "HumanEval/140": ('fix_spaces(" Example   3")', '"_Example-3"'),  # f(x) == y, spaces kept
    }
    for tid, (source, want) in forms.items():
        checks = extract_checks(probs[tid]["prompt"], probs[tid]["entry_point"])
        assert (source, want) in [(c.source, c.want) for c in checks], (tid, checks)


def test_visible_checks_hold_for_almost_every_canonical_solution(probs, box):
    """The checks we extract are right: the reference solution passes them, except where HumanEval's own
    docstring example is wrong (HumanEval/47's median, /116, /130's recurrence, /148's tuple)."""
    from assistant.doctest_runner import run_checks

    failing = []
    for tid, p in probs.items():
        checks = extract_checks(p["prompt"], p["entry_point"])
        if checks and not run_checks(p["prompt"] + p["canonical_solution"], checks, fn=p["entry_point"], box=box).ok:
            failing.append(tid)
    assert set(failing) <= {"HumanEval/47", "HumanEval/116", "HumanEval/130", "HumanEval/148"}, failing


def test_grader_accepts_every_canonical_solution_and_rejects_an_empty_body(probs, box):
    items = list(probs.values())
    verdicts = grade_completions([(p, p["canonical_solution"]) for p in items], box)
    assert all(v["passed"] for v in verdicts), [p["task_id"] for p, v in zip(items, verdicts) if not v["passed"]]
    empty = grade_completions([(p, "    pass\n") for p in items], box)
    assert not any(v["passed"] for v in empty)


def test_grade_takes_whole_functions_that_replace_the_stub(probs, box):
    p = probs["HumanEval/2"]
    right = "def truncate_number(number: float) -> float:\n    return number % 1.0\n"
    wrong = "def truncate_number(number: float) -> float:\n    return number\n"
    assert [v["passed"] for v in grade(p, [right, wrong], box)] == [True, False]


def test_leaky_feedback_shows_the_hidden_assert(probs, box):
    test = leaky_tester(probs["HumanEval/2"], box)
    assert test("def truncate_number(number: float) -> float:\n    return number % 1.0\n").ok
    report = test("def truncate_number(number: float) -> float:\n    return 0.5\n")
    assert not report.ok and "AssertionError" in report.summary() and "candidate(" in report.summary()


def _scripted(tmp_path, outputs):
    path = tmp_path / "model.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return path


def test_bench_writes_results_resumes_and_labels_leaky(tmp_path, workspace, capsys, probs):
    right0 = ("```python\nfrom typing import List\ndef has_close_elements(numbers: List[float], threshold: float)"
              " -> bool:\n    return any(abs(a - b) < threshold for i, a in enumerate(numbers)"
              " for b in numbers[i + 1:])\n```")
    wrong1 = "```python\ndef separate_paren_groups(paren_string):\n    return []\n```"
    # Task 0 passes at once; task 1 fails its first candidate, then Ctrl-C arrives during the sampled ones.
    model = _scripted(tmp_path, [right0, wrong1, {"text": "```python\n", "raise": "KeyboardInterrupt"}])
    settings = load_settings({"model": f"scripted:{model}", "workspace": str(workspace)})
    cfg = BenchConfig(limit=2, candidates=2, iters=0)
    runs = tmp_path / "runs"
    assert bench_humaneval(settings, cfg, runs_root=runs, command="test") == 130
    run_dir = next(p for p in runs.iterdir() if p.is_dir())
    done = sorted(f.name for f in (run_dir / "tasks").glob("*.json"))
    assert done == ["HumanEval_0.json"]
    first = json.loads((run_dir / "tasks" / "HumanEval_0.json").read_text())
    assert first["raw"]["passed"] and first["agent"]["passed"] and first["tokens"] > 0
    # The rerun resumes at task 1: task 0 is not run again (its file stays as it was; and with the generation
    # cache gone, the scripted model holds outputs for task 1 only, so running task 0 would fail).
    written = (run_dir / "tasks" / "HumanEval_0.json").stat().st_mtime_ns
    (runs / "generations.jsonl").unlink()
    wrong1b = "```python\ndef separate_paren_groups(paren_string):\n    return ['()']\n```"
    model.write_text(json.dumps(wrong1) + "\n" + json.dumps(wrong1b) + "\n")
    capsys.readouterr()
    assert bench_humaneval(settings, cfg, runs_root=runs, command="test") == 0
    out = capsys.readouterr().out
    assert "| raw (first greedy candidate) | 1/2 | 50.0% |" in out and "| agent (after the loop) | 1/2 |" in out
    assert (run_dir / "tasks" / "HumanEval_0.json").stat().st_mtime_ns == written
    task1 = json.loads((run_dir / "tasks" / "HumanEval_1.json").read_text())
    # Both fail the one visible example: the first (greedy) candidate stays.
    assert task1["candidates_tried"] == 2 and "return []" in task1["agent"]["code"]
    assert (run_dir / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "summary.json").read_text())["done"] == 2
    # --leaky: its own run folder, and every output says so.
    model.write_text(json.dumps(right0) + "\n")
    leaky = BenchConfig(limit=1, candidates=1, iters=0, leaky=True)
    assert bench_humaneval(settings, leaky, runs_root=runs, command="test --leaky") == 0
    out = capsys.readouterr().out
    assert "leaky" in out.splitlines()[0].lower() and "agent (leaky)" in out
    leaky_dir = next(p for p in runs.iterdir() if p.name.startswith("leaky-"))
    assert (leaky_dir / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((leaky_dir / "tasks" / "HumanEval_0.json").read_text())["leaky"] is True
