"""The command line as a user runs it: a real subprocess of `python -m assistant`."""

import json
import os
import subprocess
import sys

from conftest import call

from assistant.logs.audit import verify


def cli(*args, cwd=None, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "assistant", *args], cwd=cwd, input=stdin, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=120)


def script(tmp_path, *outputs):
    path = tmp_path / "script.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in outputs))
    return f"scripted:{path}"


def test_help_teaches_and_imports_nothing_heavy():
    code = ("import sys\nfrom assistant.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'httpx', 'prompt_toolkit') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "assistant --once" in out and "examples:" in out
    assert out.strip().endswith("HEAVY []")


def test_once_runs_a_tool_and_answers(tmp_path, workspace):
    spec = script(tmp_path, call("read_file", path="hello.py"), "hello.py prints hello.")
    r = cli("--once", "--model", spec, "what does hello.py do?", cwd=workspace)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello.py prints hello.\n"
    assert '> read_file {"path": "hello.py"}' in r.stderr


def test_once_json(tmp_path, workspace):
    spec = script(tmp_path, call("run_python", code="print(17*23)"), "391")
    r = cli("--once", "--yes", "--json", "--model", spec, "Compute 17*23 with run_python", cwd=workspace)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["answer"] == "391" and data["error"] is None
    assert data["tool_calls"][0]["name"] == "run_python" and "391" in data["tool_calls"][0]["observation"]
    assert data["timings"]["total_seconds"] > 0
    assert verify(data["audit_log"])[1] is None


def test_once_refuses_commands_without_yes(tmp_path, workspace):
    spec = script(tmp_path, call("run_command", command="touch x"), "could not")
    r = cli("--once", "--json", "--model", spec, "make x", cwd=workspace)
    data = json.loads(r.stdout)
    assert data["tool_calls"][0]["observation"].startswith("Denied: run_command needs approval")
    assert "--yes (--approval auto)" in data["tool_calls"][0]["observation"]
    assert not (workspace / "x").exists()


def test_approval_flag(tmp_path, workspace):
    spec = script(tmp_path, call("run_command", command="touch x"), "could not")
    r = cli("--once", "--json", "--approval", "never", "--model", spec, "make x", cwd=workspace)
    assert json.loads(r.stdout)["tool_calls"][0]["observation"].startswith(
        "Denied: run_command is turned off in this session (--approval never)")
    assert not (workspace / "x").exists()
    r = cli("--once", "--approval", "auto", "--model", spec, "make x", cwd=workspace)
    assert r.returncode == 0 and (workspace / "x").exists()
    r = cli("--once", "--approval", "sometimes", "hi", cwd=workspace)
    assert r.returncode == 2 and "invalid choice: 'sometimes'" in r.stderr


def test_config_show_names_the_approval_policy_and_its_source(workspace):
    r = cli("config", "show", "--yes", cwd=workspace)
    row = next(line for line in r.stdout.splitlines() if line.startswith("approval "))
    assert row.split() == ["approval", '"auto"', "flag"]
    r = cli("config", "show", cwd=workspace, env={"ASSISTANT_YES": "1", "ASSISTANT_SANDBOX": "weak"})
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in r.stdout.splitlines() if line.strip()}
    assert rows["approval"] == ['"auto"', "environment (ASSISTANT_YES)"]
    assert rows["sandbox"] == ['"weak"', "environment"] and "yes" not in rows


def test_once_reads_stdin(tmp_path, workspace):
    spec = script(tmp_path, "You said hi.")
    r = cli("--once", "-", "--model", spec, cwd=workspace, stdin="hi there\n")
    assert r.returncode == 0 and r.stdout == "You said hi.\n"


def test_errors_are_one_line_with_exit_1(tmp_path, workspace):
    r = cli("--once", "--model", "no-such-model", "hi", cwd=workspace)
    assert r.returncode == 1
    assert r.stderr.startswith("error: unknown model 'no-such-model'") and r.stderr.count("\n") == 1
    r = cli("--once", "--model", "no-such-model", "--debug", "hi", cwd=workspace)
    assert "Traceback" in r.stderr
    r = cli("--once", "--model", script(tmp_path), "hi", cwd=workspace)  # a model with nothing to say
    assert r.returncode == 1 and r.stderr == "error: scripted model has no more outputs\n"


def test_remember_appends_a_timestamped_note(isolated_home):
    assert cli("--remember", "the tests use pytest").returncode == 0
    assert cli("--remember", "second note").returncode == 0
    lines = (isolated_home / "memory_bank" / "global.md").read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith("- 20") and lines[0].endswith("the tests use pytest")


def test_audit_show_and_verify(tmp_path, workspace, isolated_home):
    spec = script(tmp_path, "fine")
    assert cli("--once", "--model", spec, "hello", cwd=workspace).returncode == 0
    show = cli("audit", "show")
    assert "user           hello" in show.stdout and "answer         fine" in show.stdout
    ok = cli("audit", "verify")
    assert ok.returncode == 0 and "hash chain intact" in ok.stdout
    log = next((isolated_home / "logs").glob("*.jsonl"))
    lines = log.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace("hello", "HELLO")
    log.write_text("".join(lines))
    bad = cli("audit", "verify", str(log))
    assert bad.returncode == 1 and "BROKEN at line 3" in bad.stdout


def test_config_show_lists_sources(workspace):
    r = cli("config", "show", "--max-steps", "5", cwd=workspace, env={"ASSISTANT_TEMPERATURE": "0.2"})
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line and not line.startswith(" ")}
    assert rows["max_steps"] == ["5", "flag"] and rows["temperature"] == ["0.2", "environment"]
    assert rows["model"] == ['"smollm2-135m"', "default"]


def test_models_list_and_info():
    r = cli("models", "list")
    assert r.returncode == 0 and "smollm2-135m" in r.stdout
    info = json.loads(cli("models", "info", "smollm2-135m").stdout)
    assert info["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_audit_show_on_a_file_that_is_not_an_audit_log(tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\n[1, 2]\n')
    r = cli("audit", "show", str(other))
    assert r.returncode == 0
    assert r.stdout.splitlines() == ['   ? {"a": 1}  (not an audit record)', "   ? [1, 2]  (not an audit record)"]


def test_undecodable_request_text_is_not_a_crash(tmp_path, workspace):
    r = subprocess.run([sys.executable, "-m", "assistant", "--once", "--model", script(tmp_path, "ok"), b"caf\xe9?"],
                       cwd=workspace, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"ok\n"
