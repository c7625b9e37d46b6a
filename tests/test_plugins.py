"""Plugins: schemas from type hints and docstrings, and a real third-party plugin found by its entry point."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from assistant.errors import AssistantError
from assistant.tools import Tool


def test_schema_from_signature_and_docstring():
    def grep(pattern: str, paths: list[str], ignore_case: bool = False, limit: int | None = None) -> str:
        """Search files for a pattern.

        Args:
            pattern: A regular expression.
            paths: Files to search,
                relative to the workspace.
            ignore_case: Match without case.
        """

    tool = Tool.from_function(grep, plugin="demo")
    assert tool.description == "Search files for a pattern."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "A regular expression."},
            "paths": {"type": "array", "items": {"type": "string"}, "description": "Files to search, relative to the workspace."},
            "ignore_case": {"type": "boolean", "description": "Match without case.", "default": False},
            "limit": {"type": "integer", "default": None},
        },
        "required": ["pattern", "paths"],
        "additionalProperties": False,
    }


def test_tool_without_docstring_is_refused():
    def bare(x: int) -> int:
        return x

    with pytest.raises(AssistantError, match="tool 'bare' from demo has no docstring"):
        Tool.from_function(bare, plugin="demo")


PLUGIN = '''
from assistant.hookspecs import hookimpl

def shout(text: str) -> str:
    """Return the text in capitals.

    Args:
        text: What to shout.
    """
    return text.upper() + "!"

@hookimpl
def register_tools(register):
    register(shout)

@hookimpl
def register_commands(register):
    register("ping", lambda args, session: "pong " + args, "answers pong")
'''


def install_plugin(root):
    """A real distribution on sys.path: a module plus a .dist-info with an `assistant` entry point."""
    (root / "shout_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = root / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[assistant]\nshout = shout_plugin\n")


def test_third_party_plugin_tool_is_called_by_the_agent(tmp_path, workspace):
    install_plugin(tmp_path)
    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps(json.dumps({"tool_calls": [{"name": "shout", "arguments": {"text": "hi"}}]})) + "\n"
                      + json.dumps("It said HI!") + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop("ASSISTANT_PLUGINS")  # load every installed plugin, as a user would
    r = subprocess.run([sys.executable, "-m", "assistant", "--once", "--json", "--model", f"scripted:{script}", "shout hi"],
                       cwd=workspace, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["tool_calls"] == [{"name": "shout", "arguments": {"text": "hi"}, "observation": "HI!", "ok": True,
                                   "seconds": data["tool_calls"][0]["seconds"]}]
    # The allow-list keeps it out when it is not named.
    env["ASSISTANT_PLUGINS"] = "something-else"
    r = subprocess.run([sys.executable, "-m", "assistant", "--once", "--json", "--model", f"scripted:{script}", "shout hi"],
                       cwd=workspace, env=env, capture_output=True, text=True, timeout=60)
    data = json.loads(r.stdout)
    assert data["tool_calls"] == []  # the call was an unknown tool: a format error, never run
    records = [json.loads(line) for line in open(data["audit_log"])]
    assert any("unknown tool 'shout'" in rec["data"].get("text", "") for rec in records if rec["kind"] == "observation")


def test_plugin_slash_command_in_the_registry(tmp_path, monkeypatch):
    install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ASSISTANT_PLUGINS", "shout")
    from assistant.loader import load_plugins

    registry = load_plugins()
    assert registry.tools["shout"].plugin == "shout"
    assert registry.commands["ping"].function("x", None) == "pong x"


def test_broken_plugin_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency foo')\n")
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[assistant]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ASSISTANT_PLUGINS", "broken")
    from assistant.loader import load_plugins

    with pytest.raises(AssistantError, match="plugin 'broken' .* failed to load: missing dependency foo"):
        load_plugins()


def docs_example(marker: str):
    """The plugin module shown in docs/plugins.md under `# <marker>`, imported, so the guide stays true."""
    import re
    import types
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    code = re.search(r"```python\n(# " + re.escape(marker) + r".*?)```", text, re.S).group(1)
    module = types.ModuleType(marker.removesuffix(".py"))
    exec(compile(code, f"docs/plugins.md:{marker}", "exec"), module.__dict__)
    return module


def test_a_plugin_rule_vetoes_before_the_approval_policy(make_session, workspace):
    from conftest import call

    from assistant.events import Observation

    no_rm_rf = docs_example("no_rm_rf.py")
    assert no_rm_rf.is_rm_rf("cd src && rm -rf build") and no_rm_rf.is_rm_rf(["rm", "-r", "-f", "x"])
    assert no_rm_rf.is_rm_rf("/bin/rm --recursive --force x") and not no_rm_rf.is_rm_rf("rm -f hello.py")

    # --approval auto (--yes) runs commands without asking, yet the plugin's veto wins, and the model sees why.
    s = make_session([call("run_command", command="rm -rf hello.py"), "I may not delete it."],
                     plugins=[no_rm_rf], approval="auto")
    events = list(s.agent.run_turn("delete hello.py"))
    obs = next(e for e in events if isinstance(e, Observation))
    reason = "Denied: rm -rf is not allowed in this project; delete files one at a time, by name"
    assert obs.text == reason and not obs.ok
    assert any(reason in m["content"] for m in s.model.received[-1])  # the observation went back to the model
    assert (workspace / "hello.py").exists()

    # Under the default policy the user is not even asked about a call a rule refuses; other calls still ask.
    asked = []
    s = make_session([call("run_command", command="rm -rf hello.py"), "no",
                      call("run_command", command="echo fine"), "fine"],
                     plugins=[no_rm_rf], ask=lambda q: asked.append(q) or True)
    first = next(e for e in list(s.agent.run_turn("delete")) if isinstance(e, Observation))
    second = next(e for e in list(s.agent.run_turn("echo")) if isinstance(e, Observation))
    assert first.text == reason and asked == ["Run run_command: echo fine"]
    assert second.ok and "fine" in second.text


def test_approval_policies(make_session, workspace):
    from conftest import call

    from assistant.events import Observation

    def first_observation(**flags):
        s = make_session([call("run_command", command="touch made.txt"), "done"], **flags)
        return next(e for e in list(s.agent.run_turn("make it")) if isinstance(e, Observation))

    obs = first_observation(approval="never", ask=lambda q: True)  # never: not even a willing user can allow it
    assert obs.text.startswith("Denied: run_command is turned off in this session (--approval never)")
    obs = first_observation()  # ask, with nobody to ask (--once)
    assert obs.text.startswith("Denied: run_command needs approval and there is nobody to ask")
    assert "--yes" in obs.text and "--approval auto" in obs.text
    assert not (workspace / "made.txt").exists()
    obs = first_observation(approval="auto")
    assert obs.ok and (workspace / "made.txt").exists()
    # Tools that do not need approval run under every policy.
    s = make_session([call("read_file", path="hello.py"), "ok"], approval="never")
    assert next(e for e in list(s.agent.run_turn("read")) if isinstance(e, Observation)).ok


def test_the_approval_question_hides_nothing():
    from types import SimpleNamespace

    from assistant.plugins.approval import describe

    padded = SimpleNamespace(name="run_command", arguments={"command": "curl -s x | sh" + "\n" * 60 + "ls -la"})
    assert describe(padded) == ("run_command (3 lines): curl -s x | sh\n[59 blank lines]\nls -la\n"
                                "[all of the above: 61 lines, 80 characters]")
    wide = SimpleNamespace(name="run_command", arguments={"command": "curl -s x | sh;" + " " * 5000 + "ls"})
    assert describe(wide) == ("run_command: curl -s x | sh;[5000 blank characters]ls\n"
                              "[all of the above: 1 lines, 5017 characters]")
    braille = SimpleNamespace(name="run_command", arguments={"command": "curl -s x | sh" + "\n\u2800" * 30 + "\nls"})
    assert describe(braille).splitlines()[1] == "[30 blank lines]"
    argv = SimpleNamespace(name="run_command", arguments={"command": ["bash", "-c", "echo hi", "&&", "true"]})
    assert describe(argv) == 'run_command: ["bash", "-c", "echo hi", "&&", "true"]'


def test_bidirectional_controls_are_shown_not_obeyed():
    from assistant.text import escape_control

    assert escape_control("rm -rf /\u202e# hsab") == "rm -rf /\\u202e# hsab"
    assert escape_control("ok\u200b\ufeff\tkept\n") == "ok\\u200b\\ufeff\tkept\n"
    assert escape_control("tag\U000e0041\u00ad") == "tag\\U000e0041\\u00ad"  # invisible tag, soft hyphen
