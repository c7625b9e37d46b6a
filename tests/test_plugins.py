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
