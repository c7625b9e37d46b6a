"""Approval: the `approval` policy (ask, auto, never) for tools that act on the world (commands, code).

It runs last among the `before_tool_call` hooks (trylast), so every other plugin's rules are checked first: a
plugin's veto stands under every policy, and the user is never asked about a call a rule would refuse anyway.
"""

from __future__ import annotations

import json
import re

from assistant.hookspecs import hookimpl


def describe(call) -> str:
    """What the user is asked to allow, shown so that nothing hides in it: an argv list as the list it is (not
    joined into what looks like a shell line), and runs of blank lines collapsed (60 empty lines could push the
    real command out of sight, above the question)."""
    args = call.arguments
    if call.name == "run_command":
        shown = args.get("command")
        shown = shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False)
    elif call.name == "run_python":
        shown = "\n" + args.get("code", "")
    else:
        shown = json.dumps(args, ensure_ascii=False)
    total_lines, total_chars = shown.strip("\n").count("\n") + 1, len(shown)
    shown = BLANK_LINES.sub(lambda m: f"\n[{m.group().count(chr(10)) - 1} blank lines]\n", shown)
    shown = BLANK_RUN.sub(lambda m: f"[{len(m.group())} blank characters]", shown)
    lines = shown.strip("\n").count("\n") + 1
    text = f"{call.name}" + (f" ({lines} lines)" if lines > 1 else "") + f": {shown}"
    if total_lines > 20 or total_chars > 1000:  # right above the question, where it cannot scroll away
        text += f"\n[all of the above: {total_lines} lines, {total_chars} characters]"
    return text


# What looks blank on a terminal: white space, and characters that draw nothing (braille blank, Hangul fillers,
# format characters).
_BLANK = "[^\\S\n]|[\u2800\u3164\uffa0\u115f\u1160\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff]"
BLANK_LINES = re.compile(f"\n(?:(?:{_BLANK})*\n){{3,}}")
BLANK_RUN = re.compile(f"(?:{_BLANK}){{20,}}")


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
