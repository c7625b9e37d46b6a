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
    start, end = last.lineno - 1, last.end_lineno
    expr = "\n".join(lines[start:end])
    if lines[start][: last.col_offset].strip():
        return code  # the expression shares its line with another statement: leave it alone
    lines[start:end] = [f"__value = ({expr.strip()})", "if __value is not None: print(repr(__value))"]
    return "\n".join(lines) + "\n"


@hookimpl
def register_tools(register):
    register(run_python)
