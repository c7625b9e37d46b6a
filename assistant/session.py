"""A session: settings, plugins, the model, the workspace, the audit log and the agent, wired together once."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path
from typing import Callable

from assistant.agent import Agent
from assistant.config import Settings
from assistant.events import Meta
from assistant.home import subdir
from assistant.models.builtin import load_model
from assistant.sandbox import Sandbox
from assistant.loader import load_plugins
from assistant.tools import ToolContext, select_tools
from assistant.workspace import UndoStack, Workspace


def new_session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class Session:
    def __init__(self, settings: Settings, *, interactive: bool = False, ask: Callable[[str], bool] | None = None,
                 model=None, plugins: list | None = None):
        from assistant.logs.audit import AuditLog
        from assistant.memory_bank.notes import read_notes

        self.settings = settings
        self.id = new_session_id()
        self.registry = load_plugins(plugins)
        self.registry.tools = select_tools(self.registry.tools, settings.tools)
        self.workspace = Workspace(settings.workspace)
        self.undo = UndoStack(self.workspace)
        log_path = Path(settings.audit_log) if settings.audit_log else subdir("logs") / f"{self.id}.jsonl"
        self.audit = AuditLog(log_path, self.id)
        self.registry.pm.register(self.audit, name="audit-log")
        from assistant.logs.live import LiveStream

        self.live = LiveStream(self.audit.path, self.id)  # streamed text for the dashboard
        self.registry.pm.register(self.live, name="live-stream")
        self.monitor = None
        if settings.monitor:  # a bad URL or password is said before the model loads
            from assistant.telemetry import check_monitor

            check_monitor(settings)
        self.model = model if model is not None else load_model(settings, self.registry)
        from assistant.memory_bank import workspace_memory_dir

        # The audit log and its live stream (when kept in the workspace) and the workspace's memory are out of commands' sight.
        self.sandbox = Sandbox(self.workspace.root, settings.sandbox, settings.sandbox_uid,
                               hidden=(self.audit.path, self.live.path, workspace_memory_dir(self.workspace.root)))
        self.context = ToolContext(self.workspace, settings, self.undo, self.id, ask, self.sandbox, self.model)
        self.memory = None
        if settings.memory:
            from assistant.memory_bank.memory import Memory

            self.memory = Memory(settings, session=self.id)
            self.memory.start()  # the embedder loads in the background, like the model
        self.agent = Agent(self.model, self.registry, settings, self.context, notes=read_notes(limit=5),
                           memory=self.memory)
        if settings.monitor:  # last before session_start: the server hears the whole session, and nothing above
            from assistant.telemetry import monitor_for  # can fail leaving its thread behind

            self.monitor = monitor_for(settings, self.id)
            self.registry.pm.register(self.monitor, name="telemetry")
        self.registry.hook.on_event(event=Meta("session_start", {
            "model": settings.model, "workspace": str(self.workspace.root),
            "tools": sorted(self.registry.tools), "interactive": interactive,
            "pid": os.getpid(), "host": socket.gethostname(),  # the dashboard tells a live session from a crashed one
        }))

    @property
    def model_name(self) -> str:
        return getattr(self.model, "name", self.settings.model)

    def close(self) -> None:
        self.registry.hook.on_event(event=Meta("session_end", {"turns": self.agent.turns}))
        if self.monitor:
            self.monitor.close()
        self.sandbox.close()
        self.live.close()
        self.audit.close()
