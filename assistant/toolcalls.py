"""Finding tool calls in model output: JSON `tool_calls`, fenced JSON, or legacy `Action:` / `Action Input:`.

Every call is parsed whole and validated against its tool's JSON schema before anything runs; a cut-off or
invalid call raises FormatError (which the loop shows to the model) and nothing of it is executed. JSON in
an answer that is not a call (a code example, a config snippet) is left alone.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from assistant.errors import FormatError
from assistant.tools import Tool

MAX_ARGUMENT_BYTES = 64 * 1024
_OBJECT_START = re.compile(r"""\{\s*["']?[A-Za-z_]\w*["']?\s*:""")
_ACTION = re.compile(r"^[ \t]*Action:[ \t]*`?([A-Za-z_][\w.-]*)`?[ \t]*\n\s*Action Input:[ \t]*", re.M)
_NEXT_SECTION = re.compile(r"^\s*(Thought|Action|Observation|Final Answer)\s*:", re.M)
_CALL_WORDS = re.compile(r"""["'](tool_calls|arguments)["']\s*:""")
_COMMENTARY_KEYS = {"id", "type", "thought", "thoughts", "reasoning", "explanation"}


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    tool: Tool
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def key(self) -> str:
        return self.name + json.dumps(self.arguments, sort_keys=True, ensure_ascii=False)


def _scan(text: str, start: int) -> tuple[int | None, list[str]]:
    """Scan the object opening at text[start]: (index just past it or None when it never closes, the keys seen
    outside strings). Strings may use double or single quotes (near-JSON from small models)."""
    depth, quote, escaped, keys = 0, None, False, []
    string_start = 0
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
                after = text[i + 1 : i + 40].lstrip()
                if after.startswith(":"):
                    keys.append(text[string_start + 1 : i])
        elif ch == '"' or (ch == "'" and _previous_char(text, i, start) in "{[:,"):
            quote, string_start = ch, i
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1, keys
    return None, keys


def _previous_char(text: str, i: int, floor: int) -> str:
    j = i - 1
    while j > floor and text[j] in " \t\r\n":
        j -= 1
    return text[j]


def _looks_like_call(value: Any, tools: dict[str, Tool]) -> bool:
    if not isinstance(value, dict):
        return False
    return ("tool_calls" in value or "arguments" in value or isinstance(value.get("function"), dict)
            or value.get("name") in tools)


def _load(span: str, tools: dict[str, Tool], keys: list[str], *, expected: bool = False) -> Any:
    """The JSON value of span; near-JSON is repaired only when nothing of it is lost or merged."""
    try:
        return json.loads(span)
    except RecursionError:
        raise FormatError("tool call nests too deeply") from None
    except json.JSONDecodeError as exc:
        first_error = exc
    import json_repair  # near-JSON (single quotes, trailing commas, True/None) from small models

    try:
        value = json.loads(json_repair.repair_json(span))
    except (json.JSONDecodeError, RecursionError, ValueError):
        value = None
    if not expected and not _looks_like_call(value, tools) and not _CALL_WORDS.search(span):
        return None  # JSON-ish text in an answer, not a call
    if not isinstance(value, dict) or keys.count("name") != _count_key(value, "name"):
        # The repair merged or dropped objects (e.g. two calls fused without a separator): never guess.
        raise FormatError(f"tool call is not valid JSON ({first_error.msg} at character {first_error.pos}; two calls fused "
                          "into one?); send one well-formed call")
    return value


def _count_key(value: Any, key: str) -> int:
    if isinstance(value, dict):
        return (key in value) + sum(_count_key(v, key) for v in value.values())
    if isinstance(value, list):
        return sum(_count_key(v, key) for v in value)
    return 0


def _envelopes(obj: dict[str, Any]) -> list[Any]:
    """The call objects inside one parsed JSON object (commentary keys beside them are ignored)."""
    if "tool_calls" in obj:
        calls = obj["tool_calls"]
        if isinstance(calls, dict):
            calls = [calls]
        if not isinstance(calls, list) or not calls:
            raise FormatError('"tool_calls" must be a non-empty list of {"name": ..., "arguments": {...}}')
        return calls
    return [obj]


def _normalise(env: Any) -> tuple[str, Any]:
    if not isinstance(env, dict):
        raise FormatError('each tool call must be an object {"name": ..., "arguments": {...}}')
    if isinstance(env.get("function"), dict):  # OpenAI style
        env = {**{k: v for k, v in env.items() if k != "function"}, **env["function"]}
    name = env.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError('a tool call needs "name": the tool to call')
    if "arguments" in env and "parameters" in env:
        raise FormatError(f'the call to {name} gives both "arguments" and "parameters"; give "arguments" once')
    if "arguments" in env or "parameters" in env:
        args = env.get("arguments", env.get("parameters"))
    else:  # arguments written beside the name: {"name": "read_file", "path": "a.py"}
        args = {k: v for k, v in env.items() if k != "name" and k not in _COMMENTARY_KEYS}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise FormatError(f"arguments of {name} are not valid JSON: {exc.msg}") from None
    return name, {} if args is None else args


def validate(name: str, args: Any, tools: dict[str, Tool]) -> Call:
    tool = tools.get(name)
    if tool is None:
        raise FormatError(f"unknown tool {name!r}; the tools are: {', '.join(sorted(tools))}")
    if not isinstance(args, dict):
        raise FormatError(f"arguments of {name} must be a JSON object")
    size = len(json.dumps(args, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_ARGUMENT_BYTES:
        raise FormatError(f"arguments of {name} are too large ({size} bytes; the limit is {MAX_ARGUMENT_BYTES})")
    errors = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(args), key=lambda e: list(e.path))
    if errors:
        parts = []
        for err in errors[:3]:
            where = f"argument {'.'.join(map(str, err.path))}: " if err.path else ""
            parts.append(where + err.message)
        raise FormatError(f"invalid arguments for {name}: {'; '.join(parts)}")
    return Call(name, args, tool)


def _legacy_calls(text: str, tools: dict[str, Tool]) -> tuple[list[tuple[int, str, Any]], list[tuple[int, int]]]:
    """Calls in the `Action:` / `Action Input:` format, and the spans of their inputs."""
    found, spans = [], []
    for m in _ACTION.finditer(text):
        name, at = m.group(1), m.end()
        if text[at:at + 1] == "{":
            end, keys = _scan(text, at)
            if end is None:
                raise FormatError("Action Input is cut off (unbalanced braces); send the whole call")
            value = _load(text[at:end], tools, keys, expected=True)
            if not isinstance(value, dict):
                raise FormatError("Action Input must be a JSON object of arguments")
            found.append((m.start(), name, value))
            spans.append((at, end))
            continue
        nxt = _NEXT_SECTION.search(text, at)
        end = nxt.start() if nxt else len(text)
        raw = text[at:end].strip()
        tool = tools.get(name)
        required = tool.parameters["required"] if tool else []
        if tool and len(required) == 1 and raw:
            found.append((m.start(), name, {required[0]: raw}))  # the whole input, every line of it
            spans.append((at, end))
        else:
            raise FormatError("Action Input must be a JSON object of arguments")
    return found, spans


def parse_tool_calls(text: str, tools: dict[str, Tool]) -> list[Call]:
    """All tool calls in `text`, in order, exact duplicates dropped. [] means the text is a final answer."""
    raw, taken = _legacy_calls(text, tools)
    pos = 0
    while True:
        m = _OBJECT_START.search(text, pos)
        if not m:
            break
        start = m.start()
        if any(a <= start < b for a, b in taken):
            pos = start + 1
            continue
        end, keys = _scan(text, start)
        if end is None:
            rest = text[start:]
            if _CALL_WORDS.search(rest) or any(f'"{name}"' in rest for name in tools):
                raise FormatError("tool call is cut off (unbalanced braces); send the whole call in one message")
            break  # an unfinished brace in prose
        value = _load(text[start:end], tools, keys)
        if _looks_like_call(value, tools):
            for env in _envelopes(value):
                name, args = _normalise(env)
                raw.append((start, name, args))
            pos = end
        else:
            pos = start + 1  # not a call: a call may still be nested inside (e.g. {"response": {...}})
    if not raw:
        if re.search(r"""["']tool_calls["']""", text):
            raise FormatError('could not find a complete tool call; use {"tool_calls": [{"name": ..., "arguments": {...}}]}')
        return []
    raw.sort(key=lambda item: item[0])
    calls, seen = [], set()
    for _, name, args in raw:
        call = validate(name, args, tools)
        if call.key() not in seen:
            seen.add(call.key())
            calls.append(call)
    return calls


def first_call_end(text: str, tools: dict[str, Tool]) -> int | None:
    """Where the first complete, valid call in `text` ends (to stop generating there), or None."""
    for m in _OBJECT_START.finditer(text):
        end, _ = _scan(text, m.start())
        if end is None:
            return None
        try:
            if parse_tool_calls(text[:end], tools):
                return end
        except FormatError:
            return None
    return None
