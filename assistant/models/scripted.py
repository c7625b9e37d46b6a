"""A model that replays scripted outputs: the backbone of the tests, and the engine of audit replay."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from assistant.errors import ModelError
from assistant.models import Usage, cut_at_stops


class ScriptedModel:
    """Replays outputs in order. An output is a string, or {"text": ...}, or {"raise": "KeyboardInterrupt"}
    (optionally after {"text": ...} has been streamed) to simulate Ctrl-C or a failure mid-generation."""

    def __init__(self, outputs: Iterable[Any] = (), name: str = "scripted", context_window: int = 8192):
        self.name = name
        self.context_window = context_window
        self.outputs: list[Any] = list(outputs)
        self.received: list[list[dict]] = []
        self.last_usage: Usage | None = None

    @classmethod
    def from_file(cls, path: str) -> "ScriptedModel":
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ModelError(f"scripted model: cannot read {path}: {exc.strerror}") from None
        outputs = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                outputs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ModelError(f"scripted model: {path}:{n} is not JSON: {exc.msg}") from None
        return cls(outputs, name=f"scripted:{p.name}")

    def enqueue(self, *outputs: Any) -> "ScriptedModel":
        self.outputs.extend(outputs)
        return self

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, stop: Iterable[str] = (),
               temperature: float = 0.0, grammar: object | None = None) -> Iterator[str]:
        self.received.append([dict(m) for m in messages])
        if not self.outputs:
            raise ModelError("scripted model has no more outputs")
        item = self.outputs.pop(0)
        text = item if isinstance(item, str) else item.get("text", item.get("output", ""))
        failure = None if isinstance(item, str) else item.get("raise")
        return cut_at_stops(self._pieces(text, failure), stop)

    def _pieces(self, text: str, failure: str | None) -> Iterator[str]:
        start, count = time.monotonic(), 0
        for piece in re.findall(r"\s*\S+|\s+", text):
            count += 1
            self.last_usage = Usage(0, count, time.monotonic() - start)
            yield piece
        if failure == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if failure:
            raise ModelError(failure)
