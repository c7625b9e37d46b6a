"""Run a candidate's code against checks (assistant.examples.Check) in the sandbox, and summarise what failed.

The candidate runs in a fresh interpreter through the sandbox (the warm worker when it can), with a time limit per
check and for the whole run; its printing is captured and bounded, so a flood of output cannot hide the result,
which comes back as one marked JSON line. The summary is what a repair prompt shows: the exception type and
message with the line it came from, the failing example, expected against got.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass, field

from assistant.examples import Check

HARNESS = r'''
import ast, contextlib, io, json, math, signal, sys, traceback
payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
mark, code, fn, per_check = payload["mark"], payload["code"], payload["fn"], payload["per_check"]
offset = payload.get("offset", 0)  # lines put in front of the candidate (its stub): not counted in messages
lines = code.splitlines()
out = sys.__stdout__

class Bounded(io.StringIO):
    def write(self, s):
        if self.tell() < 4000:
            super().write(s[: 4000 - self.tell()])
        return len(s)

class Timeout(BaseException):
    pass

def on_alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, on_alarm)

def where(exc):
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == "<candidate>" and frame.lineno and frame.lineno <= len(lines):
            return f" (line {frame.lineno - offset if frame.lineno > offset else frame.lineno}: " \
                   f"{lines[frame.lineno - 1].strip()[:120]})"
    return ""

def describe(exc):
    if isinstance(exc, Timeout):
        return f"timed out after {per_check:g}s (an endless loop?)"
    if isinstance(exc, SyntaxError):
        text = (exc.text or "").strip()[:120]
        line = exc.lineno - offset if exc.lineno and exc.lineno > offset else exc.lineno
        return f"SyntaxError: {exc.msg} (line {line}: {text})" if text else f"SyntaxError: {exc.msg}"
    msg = str(exc)[:300]
    return f"{type(exc).__name__}: {msg}{where(exc)}" if msg else f"{type(exc).__name__}{where(exc)}"

def limited(seconds, thunk, sink):
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return thunk()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

def same(got, want_text, printed):
    try:
        want = ast.literal_eval(want_text)
    except Exception:
        text = want_text.strip()
        return text in (repr(got), str(got)) or (got is None and printed.strip() == text)
    if got is None and want is None:
        return True
    if got is None and printed.strip():
        try:
            got = ast.literal_eval(printed.strip())
        except Exception:
            return printed.strip() == want_text.strip()
    try:
        if got == want:
            return True
    except Exception:
        return False
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(want, numbers) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)) and len(got) == len(want):
        return type(got) is type(want) and all(same(g, repr(w), "") for g, w in zip(got, want))
    return False

report = {"error": None, "results": []}
ns = {"__name__": "__candidate__"}
sink = Bounded()
try:
    compiled = compile(code, "<candidate>", "exec")
    limited(per_check, lambda: exec(compiled, ns), sink)
    if fn and not callable(ns.get(fn)):
        report["error"] = f"NameError: the code does not define a function named {fn}"
except BaseException as exc:
    report["error"] = describe(exc)
if report["error"] is None:
    for check in payload["checks"]:
        sink = Bounded()
        entry = {"check": check["source"], "want": check["want"], "passed": False, "got": None, "error": None}
        try:
            for stmt in check.get("setup", []):
                limited(per_check, lambda: exec(compile(stmt, "<example>", "exec"), ns), sink)
            try:
                expr = compile(check["source"], "<example>", "eval")
            except SyntaxError:
                got = limited(per_check, lambda: exec(compile(check["source"], "<example>", "exec"), ns), sink)
            else:
                got = limited(per_check, lambda: eval(expr, ns), sink)
            printed = sink.getvalue()
            entry["got"] = repr(got)[:300] if got is not None or not printed else printed.strip()[:300]
            entry["passed"] = bool(same(got, check["want"], printed))
        except BaseException as exc:
            entry["error"] = describe(exc)
        report["results"].append(entry)
out.write("\n" + mark + json.dumps(report) + "\n")
out.flush()
'''


@dataclass
class CheckResult:
    check: str
    want: str
    passed: bool
    got: str | None = None
    error: str | None = None


@dataclass
class TestReport:
    """The outcome of running one candidate against its checks."""

    total: int
    results: list[CheckResult] = field(default_factory=list)
    error: str | None = None  # the code did not compile, define the function, or finish
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def ok(self) -> bool:
        return self.error is None and self.passed == self.total

    @property
    def runs(self) -> bool:
        """The code compiled and defined the function (whatever the checks said)."""
        return self.error is None

    def summary(self, limit: int = 600) -> str:
        """A concise error summary for a repair prompt: what broke, on which example, expected against got."""
        if self.error:
            return self.error[:limit]
        lines = []
        for r in self.results:
            if r.passed:
                continue
            if r.error:
                lines.append(f"{r.check} raised {r.error}")
            else:
                lines.append(f"{r.check} returned {r.got}, expected {r.want}")
        if not lines:
            return "all examples pass"
        head = f"{len(lines)} of {self.total} examples fail:\n" if len(lines) > 1 else ""
        text = head + "\n".join(lines[:3])
        return text[:limit]

    def signature(self) -> str:
        """What the failure looks like, for noticing the loop is stuck (the same error twice)."""
        if self.error:
            return self.error.split(" (line")[0]
        return "|".join(f"{r.check}:{r.error or r.got}" for r in self.results if not r.passed)

    def to_dict(self) -> dict:
        return {"total": self.total, "passed": self.passed, "error": self.error, "seconds": round(self.seconds, 3),
                "results": [r.__dict__ for r in self.results]}


def run_checks(code: str, checks: list[Check], *, fn: str | None, box, timeout: float = 10.0,
               per_check: float = 3.0, cwd: str | None = None, prelude: str = "") -> TestReport:
    """Run `prelude` + `code` then each check in a fresh sandboxed interpreter (isolated mode: the workspace's
    own modules cannot shadow the harness's); never raises for what the code does. Line numbers in messages
    count from the start of `code`."""
    mark = "@@checks-" + secrets.token_hex(8) + "@@"
    program = prelude + code
    payload = json.dumps({"mark": mark, "code": program, "fn": fn, "per_check": per_check,
                          "offset": prelude.count("\n"), "checks": [c.to_dict() for c in checks]})
    result = box.run([sys.executable, "-I", "-c", HARNESS], cwd=cwd or str(box.workspace), timeout=timeout,
                     stdin=payload.encode("utf-8"), max_output=256 * 1024, warm=True)
    report = TestReport(total=len(checks), seconds=result.seconds)
    found = result.stdout.rfind(mark)
    if found < 0:
        if result.timed_out:
            report.error = f"timed out after {timeout:g}s (an endless loop?)"
        elif result.truncated:
            report.error = "the output flooded the limit before the examples finished (print in a loop?)"
        else:
            tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            report.error = f"the interpreter exited with status {result.returncode}: {tail[:300]}"
        return report
    try:
        data = json.loads(result.stdout[found + len(mark):].splitlines()[0])
    except (ValueError, IndexError):
        report.error = "the check harness's report was cut short"
        return report
    report.error = data["error"]
    report.results = [CheckResult(**r) for r in data["results"]]
    return report
