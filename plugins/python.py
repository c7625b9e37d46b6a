"""run_python: a Python snippet run in a fresh interpreter in the workspace, through the sandbox."""

from __future__ import annotations

import ast
import sys

from assistant.errors import ToolError
from assistant.hookspecs import hookimpl
from assistant.plugins.shell import execute
from assistant.tools import requires_approval


@requires_approval
def run_python(code: str, timeout: int = 30, context=None) -> str:
    """Run Python code in a new interpreter in the workspace; print() what you want to see.

    Args:
        code: The Python source to run.
        timeout: Seconds before the interpreter is killed.
    """
    if not code.strip():
        raise ToolError("code is empty")
    code = echo_last_expression(code)
    # -E -s: ignore PYTHON* variables and the user site; unlike -I, the workspace stays importable.
    return execute([sys.executable, "-E", "-s", "-"], context=context, timeout=timeout, label="run_python",
                   stdin=code.encode("utf-8"))


def echo_last_expression(code: str) -> str:
    """Like the interactive prompt: a final bare expression has its value printed (`17*23` shows 391)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code  # let the interpreter report it
    last = tree.body[-1] if tree.body else None
    if not isinstance(last, ast.Expr):
        return code
    if isinstance(last.value, ast.Call) and getattr(last.value.func, "id", "") == "print":
        return code
    lines = code.splitlines()
    if lines[last.lineno - 1][: last.col_offset].strip():
        return code  # the expression shares its line with an earlier statement: leave it alone
    expr = ast.get_source_segment(code, last.value)
    # Whatever follows the expression on its last line (a comment, a `;`) is dropped with it.
    head = lines[: last.lineno - 1]
    return "\n".join(head + [f"__value = ({expr}\n)", "if __value is not None: print(repr(__value))"]) + "\n"


@hookimpl
def register_tools(register):
    register(run_python)
