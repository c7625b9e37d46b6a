"""Approval: tools that act on the world (commands, code) ask the user first unless --yes was given."""

from __future__ import annotations

import json

from assistant.hookspecs import hookimpl


def describe(call) -> str:
    args = call.arguments
    if call.name == "run_command":
        shown = args.get("command")
        shown = shown if isinstance(shown, str) else " ".join(map(str, shown))
    elif call.name == "run_python":
        shown = "\n" + args.get("code", "")
    else:
        shown = json.dumps(args, ensure_ascii=False)
    return f"{call.name}: {shown}"


@hookimpl
def before_tool_call(call, context):
    if not call.tool.needs_approval or context.settings.yes:
        return None
    if context.ask is None:
        return f"{call.name} needs approval and there is nobody to ask: rerun with --yes to allow it"
    if context.ask(f"Run {describe(call)}"):
        return None
    return f"the user declined to run {call.name}"
