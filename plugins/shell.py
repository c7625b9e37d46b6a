"""run_command: a shell command or an argv list, run in the workspace through the sandbox."""

from __future__ import annotations

from assistant import sandbox
from assistant.errors import ToolError
from assistant.hookspecs import hookimpl
from assistant.tools import requires_approval


@requires_approval
def run_command(command: str | list[str], timeout: int = 60, context=None) -> str:
    """Run a shell command in the workspace and return its exit status and output.

    Args:
        command: A shell command line (run with bash -c), or a list of arguments run without a shell.
        timeout: Seconds before the command and everything it started are killed.
    """
    if isinstance(command, list):
        if not command or not all(isinstance(a, str) for a in command):
            raise ToolError("command list must hold strings and not be empty")
        argv = command
    else:
        if not command.strip():
            raise ToolError("command is empty")
        argv = ["bash", "-c", command]
    return execute(argv, context=context, timeout=timeout, label=f"run_command {command!r}")


def execute(argv: list[str], *, context, timeout: int, label: str, stdin: bytes | None = None) -> str:
    """Run argv in the workspace through the sandbox (its warm worker when it can), capped by
    --command-timeout, with an undo snapshot."""
    limit = context.settings.command_timeout if context else 60
    timeout = max(1, min(int(timeout), limit))
    cwd = str(context.workspace.root) if context else "."
    box = context.sandbox if context and context.sandbox else sandbox.for_workspace(cwd)
    box.layer  # no acceptable layer: refuse (SandboxError names the fix) before taking a snapshot
    if context and context.undo:
        context.undo.before_workspace(label)
    try:
        result = box.run(argv, cwd=cwd, timeout=timeout, stdin=stdin, warm=True)
    finally:
        if context and context.undo:
            context.undo.after_workspace()
    if result.layer == "rlimits":  # the user opted out of isolation: say so wherever the output is read
        return "[not isolated: --sandbox " + box.policy + " ran this with resource limits only]\n" + result.render()
    return result.render()


@hookimpl
def register_tools(register):
    register(run_command)
