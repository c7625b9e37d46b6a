"""The self-improvement loop: samples from real session logs, decontamination against the real HumanEval, the
promotion rule, and one iteration end to end on a tiny model (the HumanEval evaluation replaced by given
figures: the real one is the benchmark's job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import call

from assistant.improve import ImproveConfig, audit_samples, decide, decontaminate, improve, ngrams

RIGHT = "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"
WRONG = "```python\ndef add(a: int, b: int) -> int:\n    return a - b\n```"


def test_samples_come_from_passed_repairs_and_accepted_answers(make_session, isolated_home):
    s = make_session([call("repair", task="Add two numbers.", signature="def add(a: int, b: int) -> int",
                           doctests=["add(1, 2) == 3"]), WRONG, RIGHT, "Done.",
                      "Paris is the capital of France."], yes=True)
    list(s.agent.run_turn("write add"))
    list(s.agent.run_turn("what is the capital of France?"))
    assert "accepted" in s.registry.commands["accept"].function("", s)
    s.close()
    samples, counts = audit_samples(isolated_home / "logs")
    assert counts["repair_passed"] == 1 and counts["accepted"] == 1
    repair = next(x for x in samples if x["kind"] == "repair")
    assert repair["instruction"].startswith("Add two numbers.") and ">>> add(1, 2) == 3" in repair["instruction"]
    assert "return a + b" in repair["response"] and "# passes" not in repair["response"]
    accepted = next(x for x in samples if x["kind"] == "accepted")
    assert accepted == {"instruction": "what is the capital of France?", "response": "Paris is the capital of France.",
                        "source": f"audit:{s.id}", "kind": "accepted"}


def test_decontamination_removes_a_planted_humaneval_prompt(tmp_path):
    from assistant.humaneval import problems

    planted = problems()["HumanEval/12"]["prompt"]  # `longest`, its docstring word for word
    src = tmp_path / "in.jsonl"
    rows = [{"instruction": "Reverse a string.", "response": "def rev(s):\n    return s[::-1]\n"},
            {"instruction": planted, "response": "    return max(strings, key=len)\n", "source": "somewhere"},
            {"instruction": "Sum a list.", "response": "def total(xs):\n    return sum(xs)\n"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = decontaminate(src, tmp_path / "out.jsonl")
    kept = [json.loads(line)["instruction"] for line in (tmp_path / "out.jsonl").open()]
    assert kept == ["Reverse a string.", "Sum a list."]
    assert report["removed"] == 1 and report["samples"][0]["task_id"] == "HumanEval/12"
    assert report["samples"][0]["line"] == 2 and len(report["samples"][0]["ngram"].split()) == 13


def test_ngrams_are_of_words_so_code_idioms_do_not_match():
    assert ngrams("for x in xs: (y)", 3) == {("for", "x", "in"), ("x", "in", "xs"), ("in", "xs", "y")}
    from assistant.improve import humaneval_index

    index = humaneval_index(13)
    idioms = ['def f(names: str) -> list[str]:\n    """Split."""\n    return sorted(d.items(), key=lambda x: x[1], '
              'reverse=True)', "values = [1.0, 2.0, 3.0, 4.0, 5.0, 2.0]"]
    assert not any(g in index for text in idioms for g in ngrams(text, 13))


def test_promotion_needs_a_better_score_on_the_same_problems():
    old = {"done": 10, "agent": 4, "raw": 3}
    assert decide(old, {"done": 10, "agent": 5, "raw": 1})[0]
    assert decide(old, {"done": 10, "agent": 4, "raw": 4})[0]  # a tie on agent goes to raw
    refused, why = decide(old, {"done": 10, "agent": 3, "raw": 9})
    assert not refused and "the old model stays" in why
    assert not decide(old, {"done": 10, "agent": 4, "raw": 3})[0]  # a tie keeps the old one
    assert not decide(old, {"done": 9, "agent": 9, "raw": 9})[0]  # not the same problems


def test_one_iteration_end_to_end_and_a_lower_score_is_not_promoted(tmp_path, isolated_home, monkeypatch):
    from test_train import make_tiny_model

    import assistant.improve as loop
    from assistant.config import load_settings
    from assistant.models.builtin import resolve

    (tmp_path / "tiny").mkdir()
    base = make_tiny_model(tmp_path / "tiny")
    source = tmp_path / "src" / "repo"
    source.mkdir(parents=True)
    (source / "LICENSE").write_text("MIT License\n\nPermission is hereby granted, free of charge, to any person")
    (source / "mathy.py").write_text("".join(
        f'def add_{a}(x):\n    """Add {a} to x.\n\n    >>> add_{a}(1)\n    {a + 1}\n    """\n    return x + {a}\n\n\n'
        for a in range(12)))
    scores = {}

    def evaluate(settings, model_dir, cfg, out):
        return {"done": 4, "raw": 1, "agent": scores[Path(model_dir) == base], "raw_pct": 25.0,
                "agent_pct": 25.0 * scores[Path(model_dir) == base], "run_dir": "-"}

    monkeypatch.setattr(loop, "evaluate", evaluate)
    settings = load_settings({"memory": False})
    cfg = dict(sources=[str(source.parent)], base_model=str(base), steps=4, batch_size=2, eval_limit=4, candidates=1)
    scores.update({True: 2, False: 1})  # the old model does better
    report = improve(settings, ImproveConfig(out_dir=str(tmp_path / "it1"), **cfg))
    assert report["dedupe"]["before"] >= 12 and report["decontaminate"]["kept"] >= 12
    assert report["train"]["steps"] == 4 and (tmp_path / "it1" / "model" / "config.json").exists()
    assert not report["promoted"] and not (isolated_home / "models" / "promoted.json").exists()
    from assistant.plugins.train import trained_models

    listed = trained_models()[str(tmp_path / "it1" / "model")]
    assert listed["agent_pass"] == 0.25 and listed["raw_pass"] == 0.25  # what `assistant models list` shows
    assert "not promoted" in (tmp_path / "it1" / "report.md").read_text()
    with pytest.raises(Exception, match="no improved model yet"):
        resolve("improved", settings, {})
    scores.update({True: 1, False: 3})  # now the new one does better
    report = improve(settings, ImproveConfig(out_dir=str(tmp_path / "it2"), **cfg))
    assert report["promoted"]
    name, _factory = resolve("improved", settings, {"transformers": lambda path, s: path})
    assert name == "model" and _factory() == str(tmp_path / "it2" / "model")


def test_the_held_out_half_is_every_other_problem_and_never_the_training_half():
    from assistant.humaneval import BenchConfig, problems

    ids = list(problems())
    held, rest = BenchConfig(half="heldout").task_ids(ids), BenchConfig(half="train").task_ids(ids)
    assert len(held) == len(rest) == 82 and not set(held) & set(rest)
    assert held[:3] == ["HumanEval/1", "HumanEval/3", "HumanEval/5"]
    assert BenchConfig(half="heldout", limit=10).task_ids(ids) == held[:10]


def test_trained_models_of_the_same_folder_name_keep_apart_in_the_benchmark(tmp_path, workspace):
    """Every iteration's model folder is named alike: the benchmark must not hand one model's cached generations
    and results to the next."""
    from test_train import make_tiny_model

    from assistant.config import load_settings
    from assistant.humaneval import BenchConfig, bench_humaneval

    runs = tmp_path / "runs"
    for n in (1, 2):
        folder = tmp_path / f"iteration-{n}" / "model"
        folder.mkdir(parents=True)
        make_tiny_model(folder)
        (folder / "train_info.json").write_text(json.dumps({"iteration": n}))
        settings = load_settings({"model": str(folder), "workspace": str(workspace), "memory": False,
                                  "constrain": False})  # a word-level tokenizer: no grammar
        bench_humaneval(settings, BenchConfig(limit=1, candidates=1, iters=0, max_new_tokens=8), runs_root=runs,
                        command="test")
    folders = [p.name for p in runs.iterdir() if p.is_dir()]
    assert len(folders) == 2 and all(name.startswith("model-") for name in folders), folders
