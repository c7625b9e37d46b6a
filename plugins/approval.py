"""Approval: the `approval` policy (ask, auto, never) for tools that act on the world (commands, code).

It runs last among the `before_tool_call` hooks (trylast), so every other plugin's rules are checked first: a
plugin's veto stands under every policy, and the user is never asked about a call a rule would refuse anyway.
"""

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


@hookimpl(trylast=True)
def before_tool_call(call, context):
    if not call.tool.needs_approval:
        return None
    policy = context.settings.approval
    if policy == "auto":
        return None
    if policy == "never":
        return (f"{call.name} is turned off in this session (--approval never): commands and code never run; "
                "answer without it")
    if context.ask is None:
        return (f"{call.name} needs approval and there is nobody to ask: rerun with --yes (--approval auto) "
                "to allow it")
    if context.ask(f"Run {describe(call)}"):
        return None
    return f"the user declined to run {call.name}"
