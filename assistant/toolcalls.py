"""Finding tool calls in model output: JSON `tool_calls`, fenced JSON, or legacy `Action:` / `Action Input:`.

Every call is parsed whole and validated against its tool's JSON schema before anything runs; a cut-off or
invalid call raises FormatError (which the loop shows to the model) and nothing of it is executed.
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
_CALL_START = re.compile(r"""\{\s*["']?(tool_calls|name|function)["']?\s*:""")
_ACTION = re.compile(r"^\s*Action:\s*`?([A-Za-z_][\w.-]*)`?\s*$\s*^\s*Action Input:\s*", re.M)
_LOOKS_LIKE_CALL = re.compile(r"""["']tool_calls["']|^\s*Action:|["']arguments["']\s*:""", re.M)
_NAME_KEY = re.compile(r"""["']name["']\s*:""")
_ENVELOPE_KEYS = {"name", "arguments", "id", "type", "function", "parameters"}


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    tool: Tool
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def key(self) -> str:
        return self.name + json.dumps(self.arguments, sort_keys=True, ensure_ascii=False)


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the object that opens at text[start], or None when it never closes (cut off)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise FormatError(f"tool call repeats the key {sorted(dupes)[0]!r} (two calls fused into one?)")
    return dict(pairs)


def _load(span: str) -> Any:
    try:
        return json.loads(span, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        first_error = exc
    import json_repair  # near-JSON (single quotes, trailing commas, True/None) from small models

    repaired = json_repair.repair_json(span)
    try:
        value = json.loads(repaired, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not value:
        raise FormatError(f"tool call is not valid JSON: {first_error.msg} at character {first_error.pos}")
    if len(_NAME_KEY.findall(span)) != _count_key(value, "name"):
        # The repair merged or dropped objects (e.g. two calls fused without a separator): never guess.
        raise FormatError("tool call is not valid JSON (two calls fused into one?); send one well-formed call")
    return value


def _count_key(value: Any, key: str) -> int:
    if isinstance(value, dict):
        return (key in value) + sum(_count_key(v, key) for v in value.values())
    if isinstance(value, list):
        return sum(_count_key(v, key) for v in value)
    return 0


def _envelopes(obj: Any) -> list[dict[str, Any]]:
    """The call objects inside one parsed JSON value."""
    if isinstance(obj, dict) and "tool_calls" in obj:
        calls = obj["tool_calls"]
        extra = set(obj) - {"tool_calls"}
        if extra:
            raise FormatError(f"unexpected key {sorted(extra)[0]!r} beside tool_calls")
        if isinstance(calls, dict):
            calls = [calls]
        if not isinstance(calls, list) or not calls:
            raise FormatError('"tool_calls" must be a non-empty list of {"name": ..., "arguments": {...}}')
        return calls
    return [obj]


def _normalise(env: Any, tools: dict[str, Tool]) -> tuple[str, dict[str, Any]]:
    if not isinstance(env, dict):
        raise FormatError('each tool call must be an object {"name": ..., "arguments": {...}}')
    if isinstance(env.get("function"), dict):  # OpenAI style
        env = {**env["function"], **{k: v for k, v in env.items() if k != "function"}}
    extra = set(env) - _ENVELOPE_KEYS
    if extra:
        raise FormatError(f'unexpected key {sorted(extra)[0]!r} in a tool call (use "name" and "arguments")')
    name = env.get("name")
    if not isinstance(name, str) or not name:
        raise FormatError('a tool call needs "name": the tool to call')
    args = env.get("arguments", env.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise FormatError(f"arguments of {name} are not valid JSON: {exc.msg}") from None
    if args is None:
        args = {}
    return name, args


def validate(name: str, args: Any, tools: dict[str, Tool]) -> Call:
    tool = tools.get(name)
    if tool is None:
        raise FormatError(f"unknown tool {name!r}; the tools are: {', '.join(sorted(tools))}")
    if not isinstance(args, dict):
        raise FormatError(f"arguments of {name} must be a JSON object")
    size = len(json.dumps(args, ensure_ascii=False).encode("utf-8"))
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
    """Calls in the `Action:` / `Action Input:` format, and the spans of their JSON inputs."""
    found, spans = [], []
    for m in _ACTION.finditer(text):
        name, rest_at = m.group(1), m.end()
        rest = text[rest_at:]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            start = rest_at + (len(rest) - len(stripped))
            end = _balanced_end(text, start)
            if end is None:
                raise FormatError("Action Input is cut off (unbalanced braces); send the whole call")
            found.append((m.start(), name, _load(text[start:end])))
            spans.append((start, end))
        else:
            line = stripped.splitlines()[0].strip() if stripped.strip() else ""
            tool = tools.get(name)
            required = tool.parameters["required"] if tool else []
            if tool and len(required) == 1 and line:
                found.append((m.start(), name, {required[0]: line}))
            else:
                raise FormatError("Action Input must be a JSON object of arguments")
    return found, spans


def parse_tool_calls(text: str, tools: dict[str, Tool]) -> list[Call]:
    """All tool calls in `text`, in order, exact duplicates dropped. [] means the text is a final answer."""
    raw, taken = _legacy_calls(text, tools)
    pos = 0
    while True:
        m = _CALL_START.search(text, pos)
        if not m:
            break
        start = m.start()
        if any(a <= start < b for a, b in taken):  # already read as an Action Input
            pos = start + 1
            continue
        end = _balanced_end(text, start)
        if end is None:
            raise FormatError("tool call is cut off (unbalanced braces); send the whole call in one message")
        obj = _load(text[start:end])
        if isinstance(obj, dict) and ("tool_calls" in obj or "arguments" in obj or "function" in obj
                                      or obj.get("name") in tools):
            for env in _envelopes(obj):
                name, args = _normalise(env, tools)
                raw.append((start, name, args))
        pos = end
    if not raw:
        if _LOOKS_LIKE_CALL.search(text):
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


def first_call_end(text: str) -> int | None:
    """Where the first complete call in `text` ends (to stop generating there), or None."""
    m = _CALL_START.search(text)
    action = _ACTION.search(text)
    starts = [i for i in (m.start() if m else None, text.find("{", action.end()) if action else None) if i is not None and i >= 0]
    if not starts:
        return None
    return _balanced_end(text, min(starts))
