"""Turn the examples a docstring shows into checks: `>>>` doctests, and calls written out in prose
(`f(x) == y`, `f(x) => y`, `f(x) ➞ y`, `f(x) should return y`, "Input: ... Output: ..." pairs).

Only what the text shows is used: these checks are what the repair loop may learn from. A check is an expression
(`source`, run after any `setup` statements) and the expected value (`want`, compared as a Python value when it
parses as one, else as printed text).
"""

from __future__ import annotations

import ast
import doctest
import re
from dataclasses import asdict, dataclass, field

ARROWS = ("==>", "==", "=>", "➞", "->", "→", "⟹", "should return", "returns", "return", "gives", "=")
_ARROW_RE = re.compile(r"\s*(" + "|".join(re.escape(a) for a in ARROWS) + r")\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Check:
    source: str
    want: str
    setup: tuple[str, ...] = field(default_factory=tuple)

    def show(self) -> str:
        return f"{self.source} == {self.want}" if self.want else self.source

    def to_dict(self) -> dict:
        d = asdict(self)
        d["setup"] = list(self.setup)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Check":
        return cls(d["source"], d.get("want", ""), tuple(d.get("setup", ())))


def doctest_checks(text: str) -> list[Check]:
    """`>>>` examples; statements with no expected output become setup for the next example."""
    try:
        examples = doctest.DocTestParser().get_examples(_dedent_docstring(text))
    except ValueError:
        return []
    checks, setup = [], []
    for ex in examples:
        source = ex.source.strip()
        want = ex.want.strip()
        if not want:
            kind = _statement_kind(source)
            if kind == "comparison":  # `>>> f(x) == y` with nothing below: the comparison must hold
                checks.append(Check(source, "True", tuple(setup)))
            elif kind == "statement":  # `>>> x = [1, 2]`: needed by the examples after it
                setup.append(source)
            continue
        if want.startswith("Traceback"):
            continue  # expected exceptions are not checks we can compare values with
        checks.append(Check(source, want, tuple(setup)))
    return checks


def _statement_kind(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return "broken"
    if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
        node = tree.body[0].value
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
            return "comparison"
        return "expression"  # shows nothing, so it checks nothing we can compare
    return "statement"


def _dedent_docstring(text: str) -> str:
    """Each line without its indentation (DocTestParser wants it consistent), and without the docstring's
    closing quotes, which would otherwise read as the last example's expected output."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        lines.append("" if line in ('"""', "'''") else line)
    return "\n".join(lines)


def _balanced(text: str, start: int) -> int | None:
    """Index just past the parenthesis group opening at text[start] == '(' (quotes respected), or None."""
    depth, quote, i = 0, "", start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif ch == "\n" and depth == 0:
            return None
        i += 1
    return None


def _value_prefix(text: str) -> str | None:
    """The longest prefix of `text` (one line, or several if brackets stay open) that is a Python expression."""
    text = text.strip()
    # Try the whole rest first, then cut back at blanks and punctuation: "3, since ..." -> "3".
    cuts = [len(text)] + [m.start() for m in re.finditer(r"[\s,;.](?=\s|$)|\s", text)][::-1]
    for cut in cuts:
        candidate = text[:cut].strip().rstrip(".,;:")
        if not candidate:
            continue
        try:
            node = ast.parse(candidate, mode="eval")
        except SyntaxError:
            continue
        after = text[len(candidate):].lstrip()
        if _is_value(node.body) and (not after or after[0] in ",.;:#(" or after[0].isalpha()):
            return candidate
    lowered = re.sub(r"\b(true|false|none)\b", lambda m: m.group(1).capitalize(), text)
    return _value_prefix(lowered) if lowered != text else None


def _is_value(node: ast.AST) -> bool:
    """Literals, containers of literals, negatives and a few constants; not names or calls."""
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return isinstance(node, ast.Name) and node.id in ("True", "False", "None")


def call_checks(text: str, fn: str) -> list[Check]:
    """Calls of `fn` written out in prose with the value they should give."""
    checks = []
    for m in re.finditer(r"(?<![\w.])(?<!def )" + re.escape(fn) + r"\s*\(", text):
        end = _balanced(text, m.end() - 1)
        if end is None:
            continue
        call = re.sub(r"\n\s*", " ", text[m.start():end])  # spaces inside strings matter: keep them
        if not _literal_call(call):
            continue
        arrow = _ARROW_RE.match(text, end)
        if not arrow:
            continue
        rest = text[arrow.end():]
        line_end = rest.find("\n")
        line = rest[: line_end if line_end >= 0 else None]
        value = _value_prefix(rest if _opens(line) else line)
        if value is None and "=" in line:  # "f(5) -> 19 - 5 - 6 = 8": the worked answer comes last
            value = _value_prefix(line.rsplit("=", 1)[1])
        if value is None:
            continue
        checks.append(Check(call, re.sub(r"\s+", " ", value) if "\n" in value else value))
    return checks


def _literal_call(call: str) -> bool:
    """`f(1, [2, 3], x='a')` but not `f(n)`: every argument must be a value we can write down."""
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        return False
    if not isinstance(node, ast.Call):
        return False
    return all(_is_value(a) for a in [*node.args, *(k.value for k in node.keywords)])


def _opens(line: str) -> bool:
    return line.count("[") + line.count("(") + line.count("{") > line.count("]") + line.count(")") + line.count("}")


_FOR_RE = re.compile(
    r"For\s+(?P<args>[A-Za-z_]\w*\s*=.+?)\s*,?\s+the\s+(?:[\w\d]+\s+)*?(?:output|result)\s+(?:should|will)\s+be\s+"
    r"(?P<out>.+)")
_INPUT_RE = re.compile(r"Input\s*:\s*(?P<args>.+?)\s*\n\s*Output\s*:\s*(?P<out>.+)", re.IGNORECASE)


def input_output_checks(text: str, fn: str) -> list[Check]:
    """'Input: arr = [1, 2], k = 3' then 'Output: 5', and 'For lst = [1, 2] the output should be 3'
    (arguments by position)."""
    checks = []
    for m in [*_INPUT_RE.finditer(text), *_FOR_RE.finditer(text)]:
        args = m.group("args").strip()
        # Drop "name = " before each argument: "arr = [1,2], k = 3" -> "[1,2], 3".
        args = re.sub(r"(^|,)\s*[A-Za-z_]\w*\s*=(?!=)\s*", r"\1 ", args).strip()
        value = _value_prefix(m.group("out"))
        if value is None:
            continue
        call = f"{fn}({args})"
        if not _literal_call(call):
            continue
        checks.append(Check(call, value))
    return checks


def extract_checks(text: str, fn: str) -> list[Check]:
    """Every check the text shows for `fn`, doctests first, without duplicates."""
    found: list[Check] = []
    seen = set()
    for check in doctest_checks(text) + call_checks(text, fn) + input_output_checks(text, fn):
        key = (check.source.replace(" ", ""), check.want.replace(" ", ""))
        if key not in seen:
            seen.add(key)
            found.append(check)
    return found
