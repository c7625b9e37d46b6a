"""Events of a turn: what the agent loop yields and what the audit log, the REPL and the dashboard consume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Event:
    kind = "event"

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Token(Event):
    """A piece of streamed model text (rendered live; not written to the audit log one by one)."""

    kind = "token"
    text: str


@dataclass
class ToolCall(Event):
    kind = "tool_call"
    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass
class Observation(Event):
    """What a tool returned (or why it did not run); `text` is what the model sees, `full` what was produced."""

    kind = "observation"
    name: str
    text: str
    ok: bool = True
    seconds: float = 0.0
    id: str = ""
    full: str | None = None


@dataclass
class Answer(Event):
    kind = "answer"
    text: str


@dataclass
class Error(Event):
    kind = "error"
    message: str
    detail: str = ""


@dataclass
class Meta(Event):
    """Anything else worth recording: the user's text, raw model output with timings, an interruption."""

    kind = "meta"
    name: str
    data: dict[str, Any] = field(default_factory=dict)
