"""The plugin surface of `assistant` (pluggy project name and entry-point group: "assistant")."""

import pluggy

hookspec = pluggy.HookspecMarker("assistant")
hookimpl = pluggy.HookimplMarker("assistant")


# --- registration: called once, when the plugins are loaded -------------------------------------------


@hookspec
def register_tools(register):
    """Register tools: call register(function) for each; the schema comes from its type hints and docstring."""


@hookspec
def register_models(register):
    """Register model backends: register(prefix, factory) where factory(spec_rest, settings) returns a Model."""


@hookspec
def register_commands(register):
    """Register slash commands: register(name, function, help) where function(args: str, session) -> str | None."""


# --- per tool call ----------------------------------------------------------------------------------


@hookspec(firstresult=True)
def before_tool_call(call, context):
    """Called before a tool runs. Return a string (the reason) to veto the call; None lets it run."""


@hookspec
def after_tool_call(call, result, context):
    """Called after a tool ran (or failed) with its result text."""


# --- everything that happens -------------------------------------------------------------------------


@hookspec
def on_event(event):
    """Called for every event of every turn (audit log, dashboard and telemetry listen here)."""
