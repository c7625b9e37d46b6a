"""Loading plugins: built-ins by module in a fixed order, then third-party ones from the `assistant` entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from assistant import hookspecs
from assistant.errors import AssistantError
from assistant.tools import Tool

BUILTIN_PLUGINS = (
    "assistant.plugins.shell",
    "assistant.plugins.python",
    "assistant.plugins.files",
    "assistant.plugins.repair",
    "assistant.plugins.search",
    "assistant.plugins.context7",
    "assistant.plugins.dedupe",
    "assistant.plugins.collect",
    "assistant.plugins.train",
    "assistant.plugins.approval",
    "assistant.models.builtin",
)

ENTRY_POINT_GROUP = "assistant"
ALLOW_ENV = "ASSISTANT_PLUGINS"  # unset: every installed plugin; "a,b": only those; "": none


@dataclass
class Command:
    name: str
    function: Callable[[str, Any], str | None]
    help: str
    plugin: str = ""


class Registry:
    """What the plugins registered: tools, model backends and slash commands, each knowing its plugin."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.tools: dict[str, Tool] = {}
        self.models: dict[str, Callable[..., Any]] = {}
        self.commands: dict[str, Command] = {}

    @property
    def hook(self):
        return self.pm.hook

    def collect(self) -> "Registry":
        for impl in self.pm.hook.register_tools.get_hookimpls():
            plugin = self.pm.get_name(impl.plugin) or ""

            def register_tool(fn, *, name=None, needs_approval=None, _plugin=plugin):
                tool = Tool.from_function(fn, name=name, plugin=_plugin, needs_approval=needs_approval)
                if tool.name in self.tools:
                    raise AssistantError(
                        f"tool {tool.name!r} from {_plugin} clashes with the one from {self.tools[tool.name].plugin}"
                    )
                self.tools[tool.name] = tool

            impl.function(register=register_tool)
        for impl in self.pm.hook.register_models.get_hookimpls():
            impl.function(register=lambda prefix, factory: self.models.__setitem__(prefix, factory))
        for impl in self.pm.hook.register_commands.get_hookimpls():
            plugin = self.pm.get_name(impl.plugin) or ""

            def register_command(name, function, help="", _plugin=plugin):
                self.commands[name.lstrip("/")] = Command(name.lstrip("/"), function, help, _plugin)

            impl.function(register=register_command)
        return self


def load_plugins(extra: list[Any] | None = None) -> Registry:
    """Create the plugin manager, load built-ins then allowed entry points, and collect what they register."""
    pm = pluggy.PluginManager("assistant")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname.rsplit(".", 1)[-1])
    allow = os.environ.get(ALLOW_ENV)
    allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise AssistantError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        pm.register(plugin, name=ep.name)
    for plugin in extra or []:
        pm.register(plugin)
    return Registry(pm).collect()
