"""The repair loop's entry points for the agent and the REPL: the `repair` tool and the /repair command
(`assistant repair` on the command line is in assistant/commands.py). The loop is assistant/repair.py."""

from __future__ import annotations

from assistant.errors import ToolError
from assistant.events import Meta
from assistant.hookspecs import hookimpl
from assistant.repair import (RepairConfig, RepairError, Request, outcome_record, prompts_for, render, solve,
                              verdict)
from assistant.tools import requires_approval


def _box(context):
    from assistant import sandbox

    if context is not None and context.sandbox is not None:
        return context.sandbox
    return sandbox.for_workspace(str(context.workspace.root) if context else ".")


@requires_approval
def repair(task: str, fn: str = "", signature: str = "", doctests: list[str] | None = None, context=None) -> str:
    """Write a Python function and test it: draft examples, generate, run them in the sandbox, fix until they pass.

    Args:
        task: What the function must do, in words.
        fn: The function's name.
        signature: Its def line, e.g. "def add(a: int, b: int) -> int".
        doctests: Examples such as "add(1, 2) == 3".
    """
    if not task.strip() and not signature.strip():
        raise ToolError("give a task or a signature")
    model = context.model if context is not None else None
    if model is None:
        raise ToolError("the repair tool needs the session's model")
    config = RepairConfig.for_profile("fast", max_new_tokens=min(context.settings.max_new_tokens, 320))
    request = Request(task, fn or None, signature or None, list(doctests or []))
    try:
        outcome = solve(model, _box(context), request, config,
                        prompts=prompts_for(getattr(context.settings, "repair_program", None)))
    except RepairError as exc:
        raise ToolError(str(exc)) from None
    if context.emit is not None:
        context.emit(Meta("repair", outcome_record(outcome)))
    return render(outcome.best.code, outcome.spec, mode="imports") + "\n# " + verdict(outcome)


def repair_command(args: str, session) -> str:
    """/repair TASK: build a function for TASK with the session's model, testing it in the sandbox."""
    if not args.strip():
        return "usage: /repair TASK (e.g. /repair return the largest of a list of numbers; name it largest)"
    lines: list[str] = []
    config = RepairConfig.for_profile("fast", design=True, max_new_tokens=min(session.settings.max_new_tokens, 320))
    if session.settings.approval == "never":  # generated code does not run, not even in the sandbox
        config.test = False
        lines.append("(--approval never: the code was not run against its examples)")
    try:
        log = lambda line: print(f"  · {line}", flush=True)  # noqa: E731
        outcome = solve(session.model, session.sandbox, Request(args.strip()), config, log=log,
                        prompts=prompts_for(session.settings.repair_program, log))
    except RepairError as exc:
        return f"error: {exc}"
    session.registry.hook.on_event(event=Meta("repair", outcome_record(outcome)))
    lines.insert(0, render(outcome.best.code, outcome.spec, mode="imports").rstrip())
    lines.append(verdict(outcome))
    return "\n".join(lines)


@hookimpl
def register_tools(register):
    register(repair)


@hookimpl
def register_commands(register):
    register("repair", repair_command, "build a function for a task and test it: /repair TASK")
