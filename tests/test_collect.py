"""`assistant collect`: samples from the fixture repositories in tests/data/collect, validated in the real sandbox."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import call

from assistant import sandbox
from assistant.config import load_settings
from assistant.errors import AssistantError, ToolError
from assistant.plugins import collect as collect_plugin
from assistant.plugins.collect import (HOMEWORK, CollectReport, collect, collect_samples, licence_of_expression,
                                       licence_of_text)
from assistant.tools import Tool
from assistant.workspace import Workspace

FIXTURE = Path(__file__).parent / "data" / "collect"
MIT = (FIXTURE / "mathlib" / "LICENSE").read_text()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The fixture repositories copied into the sandbox's workspace (as root, the sandbox's uid reaches only
    that), so that the doctests can import the repositories' own modules."""
    root = tmp_path_factory.mktemp("collect")
    shutil.copytree(FIXTURE, root / "src")
    return root


@pytest.fixture(scope="module")
def box(ws):
    b = sandbox.Sandbox(ws, "auto")
    yield b
    b.close()


@pytest.fixture
def run(ws, box, tmp_path):
    """run(name, sources=None, **options) -> (report, samples): collect into tmp_path/name."""
    def go(name="out.jsonl", sources=None, **options):
        out = tmp_path / name
        report = collect([str(s) for s in (sources or [ws / "src"])], out, box=box, **options)
        return report, read(out)
    return go


def read(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def names(samples) -> list[tuple[str, str]]:
    return [(s["source"], s["name"]) for s in samples]


def repo(root: Path, files: dict[str, str | bytes], licence: str = MIT) -> Path:
    root.mkdir(parents=True)
    (root / "LICENSE").write_text(licence)
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return root


# --- python ---------------------------------------------------------------------------------------------


def test_python_functions_with_docstrings_become_validated_samples(run, ws):
    report, samples = run(stack="python")
    assert names(samples) == [
        ("geometry", "square_area"), ("geometry", "rect_area"), ("geometry", "circle_area"), ("geometry", "perimeter"),
        ("mathlib", "mul"), ("mathlib", "add"), ("mathlib", "hypot"), ("mathlib", "scaled"), ("mathlib", "norm"),
        ("mathlib", "scale"), ("mathlib", "square")]
    by_name = {s["name"]: s for s in samples}
    # sub's doctest fails, ident's module imports a missing module, ragged cannot be dedented, ops.mul repeats more.mul
    assert report.rejected == {"doctest failed": 2, "compile": 1, "duplicate": 1}
    assert report.skipped == {"cs101-homework": "homework name", "gplcode": "licence GPL",
                              "nolicence": "licence unknown"}
    assert report.sources == 6 and report.written == 11 and report.finished
    assert [n for n, s in by_name.items() if s["checks"] == ["compile", "doctest"]] == [
        "perimeter", "add", "hypot", "scaled", "norm", "square"]
    add = by_name["add"]
    assert add["path"] == "mathlib/ops.py" and add["licence"] == "MIT" and add["golden"] is False and add["v"] == 1
    source = (ws / "src" / "mathlib" / add["path"]).read_text().splitlines()
    assert source[add["line"] - 1] == "def add(a: int, b: int) -> int:"
    assert add["instruction"].startswith("Write a Python function `add(a: int, b: int) -> int`: Add two numbers.")
    assert ">>> add(2, 3)\n5" in add["instruction"]
    assert add["response"].startswith("def add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.")
    assert by_name["norm"]["response"].startswith("def norm(self) -> float:")  # dedented out of its class
    assert "method of class `Vector`" in by_name["norm"]["instruction"]
    assert by_name["square"]["path"] == "notebooks/demo.ipynb"
    assert by_name["perimeter"]["licence"] == "BSD"
    for s in samples:
        compile(s["response"], "<sample>", "exec")


def test_require_doctest_keeps_only_doctest_validated_samples(run):
    report, samples = run(stack="python", require_doctest=True)
    assert sorted(s["name"] for s in samples) == ["add", "hypot", "norm", "perimeter", "scaled", "square"]
    assert report.rejected == {"no doctest": 6, "doctest failed": 2, "compile": 1}  # both muls, scale, geometry 3
    assert all(s["checks"] == ["compile", "doctest"] for s in samples)


def test_any_licence_takes_gpl_and_unlicensed_repositories_but_never_homework(run):
    report, samples = run(stack="python", any_licence=True)
    licences = {s["source"]: s["licence"] for s in samples}
    assert licences["gplcode"] == "GPL" and licences["nolicence"] == "unknown"
    assert "cs101-homework" not in licences and report.skipped == {"cs101-homework": "homework name"}


def test_a_doctest_that_never_ends_is_stopped_and_the_next_one_still_runs(run, ws, monkeypatch):
    monkeypatch.setattr(collect_plugin, "PER_SAMPLE_SECONDS", 0.5)
    code = ('def spin():\n    """Never returns.\n\n    >>> spin()\n    1\n    """\n    while True:\n        pass\n\n\n'
            'def one():\n    """One.\n\n    >>> one()\n    1\n    """\n    return 1\n')
    src = repo(ws / "spin" / "spinner", {"spin.py": code})
    report, samples = run(sources=[src], stack="python")
    assert names(samples) == [("spinner", "one")] and report.rejected == {"doctest failed": 1}


def test_hidden_vendored_binary_large_and_non_utf8_files_are_skipped(run, ws):
    src = repo(ws / "skips" / "tidy", {
        "keep.py": 'def kept():\n    """Kept."""\n', "node_modules/a.py": 'def a():\n    """No."""\n',
        "build/b.py": 'def b():\n    """No."""\n', ".hidden/c.py": 'def c():\n    """No."""\n',
        "env1/pyvenv.cfg": "home = /usr\n", "env1/d.py": 'def d():\n    """No."""\n',
        "__pycache__/e.py": 'def e():\n    """No."""\n', "blob.py": b"\x00\x01binary",
        "latin.py": 'def f():\n    """caf\xe9"""\n'.encode("latin-1"),
        "big.py": 'def big():\n    """Big."""\n' + "# padding\n" * 200, "py2.py": "print 'hello'\n"})
    report, samples = run(sources=[src], stack="python", max_file_kb=1)
    assert names(samples) == [("tidy", "kept")]
    assert report.files_skipped == {"binary": 1, "not utf-8": 1, "too large": 1, "python syntax error": 1}
    assert report.files == 5


def test_decorators_are_part_of_the_sample_and_of_its_test(run, ws):
    src = repo(ws / "deco" / "cached", {"fib.py": (
        "import functools\n\n\n@functools.lru_cache(maxsize=None)\ndef fib(n):\n"
        '    """Fibonacci numbers, remembered.\n\n    >>> fib(30)\n    832040\n'
        '    >>> fib.cache_info().hits > 0\n    True\n    """\n'
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n")})
    report, samples = run(sources=[src], stack="python")
    assert [s["checks"] for s in samples] == [["compile", "doctest"]]  # cache_info exists only when decorated
    assert samples[0]["response"].startswith("@functools.lru_cache(maxsize=None)\ndef fib(n):")


def test_code_nested_past_the_parser_skips_its_file_not_the_run(run, ws):
    src = repo(ws / "deep" / "generated", {"a_deep.py": "x = " + "+".join(["1"] * 100_000) + "\n",
                                           "b.py": 'def b():\n    """Still collected."""\n'})
    report, samples = run(sources=[src], stack="python")
    assert names(samples) == [("generated", "b")] and report.files_skipped == {"python syntax error": 1}


def test_a_golden_record_that_cannot_be_utf8_is_rejected_not_fatal(run, tmp_path):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"instruction": "a", "response": "\ud800"}) + "\n"
                      + json.dumps({"instruction": "b", "response": "fine"}) + "\n")
    report, samples = run(golden=[str(golden)], stack="python", max_samples=2)
    assert [s["response"] for s in samples][:1] == ["fine"] and samples[0]["golden"] and report.golden == 1
    assert report.rejected.get("not UTF-8") == 1


def test_resume_over_an_output_edited_by_hand_is_a_clear_error(run, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(stack="python", progress=interrupt_after(2))
    out = tmp_path / "out.jsonl"
    state = json.loads((tmp_path / "out.jsonl.state.json").read_text())
    out.write_bytes(b"not json\n".ljust(state["length"], b" "))
    with pytest.raises(AssistantError, match="out.jsonl:1: not a sample line"):
        run(stack="python", resume=True)


# --- other stacks ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("g++"), reason="needs g++")
def test_cpp_files_are_syntax_checked(run):
    report, samples = run(stack="cpp")
    assert [(s["path"], s["checks"]) for s in samples] == [("src/good.cpp", ["syntax"]), ("src/util.hpp", ["syntax"])]
    assert report.rejected == {"syntax": 1}  # bad.cpp
    assert samples[0]["instruction"] == "Write the C++ file `src/good.cpp`: Sums a vector of integers."
    # the licence header is passed over for the comment that says what the file is
    assert samples[1]["instruction"].endswith(": Small inline helpers shared by the sources.")
    assert samples[0]["response"] == (FIXTURE / "native" / "src" / "good.cpp").read_text()


@pytest.mark.skipif(not shutil.which("node"), reason="needs node")
def test_web_js_is_checked_by_node_and_ts_kept_unchecked(run):
    report, samples = run(stack="web")
    assert [(s["path"], s["checks"]) for s in samples] == [("web/app.js", ["syntax"]), ("web/types.ts", ["none"])]
    assert report.rejected == {"syntax": 1}  # broken.js
    assert report.notes == ["no checker for .ts: samples are not syntax-checked"]


def test_go_without_gofmt_keeps_files_unchecked_with_a_note(run, ws, monkeypatch):
    src = repo(ws / "gosrc" / "hello", {"main.go": "// Prints hello.\npackage main\n\nfunc main() {}\n",
                                         "bad.go": "package main\nfunc {\n"})
    monkeypatch.setattr(shutil, "which", lambda name: None)
    report, samples = run(sources=[src], stack="go")
    assert [(s["path"], s["checks"]) for s in samples] == [("bad.go", ["none"]), ("main.go", ["none"])]
    assert report.notes == ["no gofmt: samples are not syntax-checked"]


# --- golden, limits, rounds -----------------------------------------------------------------------------


def test_golden_samples_come_first_even_with_a_gpl_licence(run, tmp_path):
    ready = tmp_path / "ready.jsonl"
    ready.write_text(json.dumps({"instruction": "Say hi.", "response": "print('hi')"}) + "\nnot json\n")
    report, samples = run(stack="python", golden=[str(ready), str(FIXTURE / "gplcode")], max_samples=3)
    assert [(s["name"] if "name" in s else s["response"], s["golden"]) for s in samples] == [
        ("print('hi')", True), ("shout", True), ("square_area", False)]
    assert samples[1]["licence"] == "GPL" and samples[1]["checks"] == ["compile", "doctest"]
    assert report.golden == 2 and report.rejected == {"golden malformed": 1}


def test_max_stops_the_run(run):
    report, samples = run(stack="python", max_samples=5)
    assert len(samples) == 5 == report.written and report.finished


def test_rounds_take_samples_per_repository_in_turn_and_go_on_where_they_stopped(run):
    _, everything = run("all.jsonl", stack="python")
    _, samples = run(stack="python", samples_per_source=2, rounds=3)
    assert [s["source"] for s in samples] == ["geometry"] * 2 + ["mathlib"] * 2 + ["geometry"] * 2 + ["mathlib"] * 4
    per_repo = {r: [s["name"] for s in samples if s["source"] == r] for r in ("geometry", "mathlib")}
    assert per_repo["geometry"] == [s["name"] for s in everything if s["source"] == "geometry"]
    assert per_repo["mathlib"] == [s["name"] for s in everything if s["source"] == "mathlib"][:6]


def test_samples_per_source_in_one_round(run):
    _, samples = run(stack="python", samples_per_source=1)
    assert names(samples) == [("geometry", "square_area"), ("mathlib", "mul")]


# --- resume ---------------------------------------------------------------------------------------------


def interrupt_after(files: int):
    seen = []

    def progress(report, where):
        seen.append(where)
        if len(seen) == files:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("files", [1, 3, 5])
def test_resume_after_an_interruption_gives_the_uninterrupted_output(run, tmp_path, files):
    options = dict(stack="python", samples_per_source=2, rounds=3)
    run("reference.jsonl", **options)
    reference = (tmp_path / "reference.jsonl").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        run(progress=interrupt_after(files), **options)
    out = tmp_path / "out.jsonl"
    assert 0 < len(out.read_bytes()) < len(reference)
    with open(out, "ab") as fh:  # a line written after the last save, then a torn one: both go
        fh.write(reference.splitlines(keepends=True)[-1] + b'{"v": 1, "stack": "pyth')
    report, samples = run(resume=True, **options)
    assert out.read_bytes() == reference
    assert len({s["response"] for s in samples}) == len(samples) == report.written
    assert report.finished


@pytest.mark.parametrize("calls", [2, 4, 6])
def test_ctrl_c_while_a_file_is_analysed_loses_nothing(run, tmp_path, monkeypatch, calls):
    """Ctrl-C lands anywhere, most likely in a sandbox run: between a turn's save and its first file, say."""
    options = dict(stack="python", samples_per_source=1, rounds=4)
    run("reference.jsonl", **options)
    analyse, seen = collect_plugin.python_outcomes, []

    def interrupted(*args):
        seen.append(args)
        if len(seen) == calls:
            raise KeyboardInterrupt
        return analyse(*args)
    monkeypatch.setattr(collect_plugin, "python_outcomes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(**options)
    monkeypatch.setattr(collect_plugin, "python_outcomes", analyse)
    run(resume=True, **options)
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "reference.jsonl").read_bytes()


def test_resume_refuses_other_options_a_missing_state_and_an_existing_output(run, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(stack="python", progress=interrupt_after(2))
    with pytest.raises(AssistantError, match="differ: max"):
        run(stack="python", max_samples=3, resume=True)
    with pytest.raises(AssistantError, match="exists: pass --resume"):
        run(stack="python")
    with pytest.raises(AssistantError, match="no state"):
        run("other.jsonl", stack="python", resume=True)


def test_bad_input_is_one_clear_error(run, tmp_path):
    with pytest.raises(AssistantError, match="unknown stack 'rust'"):
        run(stack="rust")
    with pytest.raises(AssistantError, match="no such file or folder"):
        run(sources=[tmp_path / "nowhere"], stack="python")
    with pytest.raises(AssistantError, match="--samples must be at least 1"):
        run(stack="python", samples_per_source=0)
    (tmp_path / "file").write_text("")
    with pytest.raises(AssistantError, match="cannot write .*file/out.jsonl"):  # its folder is a file
        run("file/out.jsonl", stack="python")


def test_dedupe_runs_on_the_output_at_the_end(run, ws):
    body = "".join(f"    step{i} = xs[{i}] * {i} + len(xs)\n" for i in range(40)) + "    return step39\n"
    src = repo(ws / "dupes" / "near", {"a.py": f'def sum_sq(xs):\n    """Sum of squares."""\n{body}',
                                       "b.py": f'def sum_sq(xs):\n    """Sum of the squares."""\n{body}'})
    report, samples = run(sources=[src], stack="python", dedupe=True)
    assert report.written == 2 and len(samples) == 1 and report.dedupe["near_duplicates"] == 1


# --- site-packages --------------------------------------------------------------------------------------


def dist(site: Path, name: str, metadata: str, files: dict[str, str], licence_file: str = "") -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.4\nName: {name.replace('_', '-')}\nVersion: 1.0\n"
                                   f"{metadata}\nA description that mentions the GPL.\n")
    if licence_file:
        (info / "licenses").mkdir()
        (info / "licenses" / "LICENSE").write_text(licence_file)
    rows = []
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
        rows.append(f"{rel},sha256=x,{len(text)}")
    (info / "RECORD").write_text("\n".join(rows + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,",
                                                   "../../bin/tool.py,,"]) + "\n")


def test_site_packages_each_distribution_is_a_repository_with_its_record_and_licence(run, ws):
    site = ws / "site-packages"
    doc = 'def {0}():\n    """{0}."""\n'
    dist(site, "pkg_a", "License-Expression: GPL-2.0-only OR MIT", {"pkg_a/__init__.py": doc.format("a_init"),
                                                                  "pkg_a/core.py": doc.format("a_core")})
    (site / "pkg_a" / "stray.py").write_text(doc.format("stray"))  # not in RECORD
    dist(site, "pkg_b", "Classifier: License :: OSI Approved :: GNU General Public License v3 (GPLv3)",
         {"pkg_b.py": doc.format("b")})
    dist(site, "pkg_c", "", {"pkg_c.py": doc.format("c")}, licence_file=(FIXTURE / "geometry" / "LICENSE").read_text())
    dist(site, "pkg_d", "License: LGPL-3.0 AND MIT", {"pkg_d.py": doc.format("d")})
    (site / "loose.py").write_text(doc.format("loose"))  # no distribution owns it
    report, samples = run(sources=[site], stack="python")
    assert [(s["source"], s["path"], s["licence"]) for s in samples] == [
        ("pkg-a", "pkg_a/__init__.py", "MIT"), ("pkg-a", "pkg_a/core.py", "MIT"), ("pkg-c", "pkg_c.py", "BSD")]
    assert report.skipped == {"pkg-b": "licence GPL", "pkg-d": "licence LGPL"}
    assert report.sources == 4


# --- licences and names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("expr, family", [
    ("MIT", "MIT"), ("Apache-2.0 WITH LLVM-exception", "Apache"), ("GPL-2.0-only OR MIT", "MIT"),
    ("MIT AND GPL-3.0-or-later", "GPL"), ("BSD-3-Clause", "BSD"), ("0BSD", "0BSD"), ("LGPL-2.1+", "LGPL"),
    ("AGPL-3.0", "AGPL"), ("SSPL-1.0", "SSPL"), ("Unlicense", "Unlicense"), ("Zlib", "Zlib"), ("CC0-1.0", "CC0"),
    ("BSL-1.0", "BSL-1.0"), ("ISC", "ISC"), ("PSF-2.0", "PSF"), ("Proprietary", "unknown"),
    ("MPL-2.0", "MPL"), ("(MIT OR Apache-2.0) AND GPL-3.0-only", "GPL"),
    ("GPL-3.0-only AND (MIT OR Apache-2.0)", "GPL"), ("(MIT OR Apache-2.0)", "MIT")])
def test_licence_expressions(expr, family):
    assert licence_of_expression(expr) == family


def test_licence_texts_are_named_by_what_comes_first():
    lgpl = "GNU LESSER GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n... the GNU General Public License ..."
    assert licence_of_text(lgpl) == "LGPL"
    assert licence_of_text("GNU AFFERO GENERAL PUBLIC LICENSE\n") == "AGPL"
    assert licence_of_text(MIT + "\n\nBundled: GNU General Public License v3") == "MIT"
    assert licence_of_text("Apache License\nVersion 2.0, January 2004\n") == "Apache"
    assert licence_of_text("works with an Apache+mod_ssl webserver") == "unknown"


@pytest.mark.parametrize("name", ["cs101-homework", "hw3", "lab_2", "Assignment1", "leetcode-solutions", "CS61A",
                                  "python-tutorial", "ml-exercises", "coursework", "cse-142"])
def test_homework_names(name):
    assert HOMEWORK.search(name)


@pytest.mark.parametrize("name", ["requests", "numpy", "python3-utils", "labels", "sha256", "web3", "hw-accel",
                                  "hwloc", "mathlib", "django-csp"])
def test_names_that_are_not_homework(name):
    assert not HOMEWORK.search(name)


# --- command line and tool ------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="assistant")
    sub = parser.add_subparsers(dest="command")
    collect_plugin.add_parser(sub, argparse.ArgumentParser(add_help=False))
    return parser.parse_args(argv)


def test_cli_collects_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    from assistant.cli import main

    assert main(["collect", "--stack", "python", "--source", str(FIXTURE / "geometry"), "--out", str(out),
                 "--max", "2"]) == 0  # the real parser: its global flags must not swallow --max
    printed = capsys.readouterr().out
    assert "wrote 2 samples (0 golden)" in printed and "repositories: 1 seen, 0 skipped" in printed
    assert len(read(out)) == 2 and json.loads((tmp_path / "cli.jsonl.state.json").read_text())["finished"]


def test_cli_ctrl_c_says_how_to_continue(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(collect_plugin, "collect", interrupted)
    args = parse(["collect", "--stack", "python", "--source", "x", "--out", str(tmp_path / "o.jsonl")])
    assert collect_plugin.run(args, load_settings({})) == 130
    assert "--resume` continues" in capsys.readouterr().err


def test_tool_writes_in_the_workspace_only(tmp_path):
    tool = Tool.from_function(collect_samples)
    assert tool.needs_approval
    assert tool.parameters["properties"]["sources"]["type"] == "array"
    assert "context" not in tool.parameters["properties"]
    (tmp_path / "ws").mkdir()
    context = SimpleNamespace(workspace=Workspace(tmp_path / "ws"), settings=load_settings({}), undo=None)
    text = collect_samples("python", [str(FIXTURE / "geometry")], "data/samples.jsonl", max_samples=2,
                           dedupe=False, context=context)
    assert text.startswith("wrote 2 samples") and len(read(tmp_path / "ws" / "data" / "samples.jsonl")) == 2
    with pytest.raises(ToolError, match="outside the workspace"):
        collect_samples("python", [str(FIXTURE)], str(tmp_path / "elsewhere.jsonl"), context=context)
    with pytest.raises(ToolError, match="exists: pass --resume"):
        collect_samples("python", [str(FIXTURE / "geometry")], "data/samples.jsonl", dedupe=False, context=context)


def test_the_agent_calls_the_tool(make_session, workspace):
    from assistant.events import Observation
    from assistant.loader import BUILTIN_PLUGINS

    extra = [] if "assistant.plugins.collect" in BUILTIN_PLUGINS else [collect_plugin]
    session = make_session([call("collect_samples", stack="python", sources=[str(FIXTURE / "geometry")],
                                 out="samples.jsonl", max_samples=3, dedupe=False), "Done."],
                           plugins=extra, approval="auto")
    obs = next(e for e in session.agent.run_turn("collect samples") if isinstance(e, Observation))
    assert obs.ok and obs.text.startswith("wrote 3 samples"), obs.text
    assert [s["name"] for s in read(workspace / "samples.jsonl")] == ["square_area", "rect_area", "circle_area"]


def test_report_round_trips_as_json():
    report = CollectReport("o.jsonl", "python", written=3, rejected={"syntax": 1})
    assert json.loads(json.dumps(report.to_dict()))["rejected"] == {"syntax": 1}
    assert "rejected: 1 (syntax 1)" in report.summary()
