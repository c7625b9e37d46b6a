"""Tools are typed, documented Python functions; their JSON schema is derived from the signature and docstring."""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from assistant.errors import AssistantError

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object"}


def _schema_for(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _schema_for(options[0])
        return {"anyOf": [_schema_for(a) for a in options]}
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return {"type": "array", "items": _schema_for(args[0]) if args else {}}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(hint))}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    return {}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and its `Args:` entries."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"^\s*Args:\s*$", doc, maxsplit=1, flags=re.M)
    description = parts[0].strip()
    params: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            if re.match(r"^\s*(Returns|Raises|Yields|Example[s]?):", line):
                break
            m = re.match(r"^\s*(\w+)\s*(\([^)]*\))?:\s*(.*)$", line)
            if m:
                current = m.group(1)
                params[current] = m.group(3).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return description, params


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    plugin: str = ""
    needs_approval: bool = False
    context_param: str | None = None

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, plugin: str = "",
                      needs_approval: bool | None = None) -> "Tool":
        description, docs = _parse_docstring(fn.__doc__ or "")
        if not description:
            raise AssistantError(f"tool {fn.__name__!r} from {plugin or 'unknown plugin'} has no docstring")
        hints = typing.get_type_hints(fn)
        props: dict[str, Any] = {}
        required: list[str] = []
        context_param = None
        for pname, param in inspect.signature(fn).parameters.items():
            if pname == "context":
                context_param = pname  # the ToolContext is passed by the loop, never by the model
                continue
            if pname not in hints:
                raise AssistantError(f"tool {fn.__name__!r}: parameter {pname!r} has no type hint")
            schema = _schema_for(hints[pname])
            if pname in docs:
                schema["description"] = docs[pname]
            if param.default is inspect.Parameter.empty:
                required.append(pname)
            else:
                schema["default"] = param.default
            props[pname] = schema
        parameters = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
        return cls(
            name=name or fn.__name__,
            description=description,
            parameters=parameters,
            function=fn,
            plugin=plugin,
            needs_approval=bool(getattr(fn, "needs_approval", False) if needs_approval is None else needs_approval),
            context_param=context_param,
        )

    def __call__(self, arguments: dict[str, Any], context: Any = None) -> Any:
        kwargs = dict(arguments)
        if self.context_param:
            kwargs[self.context_param] = context
        return self.function(**kwargs)


def requires_approval(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a tool as one that changes the world outside the files it names (asks before running)."""
    fn.needs_approval = True  # type: ignore[attr-defined]
    return fn


@dataclass
class ToolContext:
    """What a tool (and the before/after hooks) may use besides its arguments."""

    workspace: Any  # assistant.workspace.Workspace
    settings: Any  # assistant.config.Settings
    undo: Any = None  # assistant.workspace.UndoStack
    session: str = ""
    ask: Callable[[str], bool] | None = None  # asks the user a yes/no question (None: nobody to ask)
    sandbox: Any = None  # assistant.sandbox.Sandbox of the workspace (None: the shared one for its folder)
    model: Any = None  # the session's model, for tools that generate (repair)
    emit: Callable[[Any], Any] | None = None  # records an event (assistant.events) in the audit log


def select_tools(tools: dict[str, Tool], spec: str) -> dict[str, Tool]:
    """The tools a `tools` setting names: "all", a comma-separated list of names, and "-name" to leave one out
    ("all,-collect_samples"). Small models choose better among fewer tools (docs/benchmarks.md)."""
    chosen: dict[str, Tool] = {}
    for word in (w.strip() for w in spec.split(",")):
        name = word.lstrip("-")
        if not name:
            continue
        if name != "all" and name not in tools:
            raise AssistantError(f"unknown tool {name!r} in the tools setting; the tools are: {', '.join(sorted(tools))}")
        names = list(tools) if name == "all" else [name]
        for n in names:
            if word.startswith("-"):
                chosen.pop(n, None)
            else:
                chosen[n] = tools[n]
    return {n: t for n, t in tools.items() if n in chosen}  # registration order, as the prompt lists them
