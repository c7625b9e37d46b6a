"""Model backends behind one Protocol, chosen by a model spec; heavy backends load in a background thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, runtime_checkable

from assistant.errors import AssistantError, ModelError


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None
    cached_tokens: int = 0  # prompt tokens whose keys and values were reused from the previous call

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class Model(Protocol):
    name: str
    context_window: int

    def stream(self, messages: list[dict], *, max_new_tokens: int, stop: Iterable[str] = (),
               temperature: float = 0.0, grammar: object | None = None) -> Iterator[str]:
        """Yield the reply to `messages` piece by piece; closing the iterator stops generation."""
        ...


def find_stop(text: str, stops: Iterable[str]) -> int | None:
    """Where the first stop string starts in `text`, or None. A stop string that is a code fence ("\\n```")
    marks the end of a code block, so the fence that opens the block does not count: a reply that begins with
    "Here is the fix:" and then opens ```python is not cut at its opening fence."""
    hits = []
    for stop in stops:
        if not stop:
            continue
        if stop.lstrip("\n").startswith("```"):
            opened = text.find("```")
            at = text.find(stop, opened + 3) if opened >= 0 else -1
        else:
            at = text.find(stop)
        if at >= 0:
            hits.append(at)
    return min(hits) if hits else None


def cut_at_stops(pieces: Iterable[str], stop: Iterable[str]) -> Iterator[str]:
    """Pass text through until a stop string appears (the stop string itself is not yielded)."""
    stops = [s for s in stop if s]
    if not stops:
        yield from pieces
        return
    hold = max(len(s) for s in stops) - 1
    seen, sent = "", 0
    for piece in pieces:
        seen += piece
        at = find_stop(seen, stops)
        if at is not None:
            if at > sent:
                yield seen[sent:at]
            close = getattr(pieces, "close", None)
            if close:
                close()
            return
        if len(seen) - hold > sent:
            yield seen[sent:len(seen) - hold]
            sent = len(seen) - hold
    if len(seen) > sent:
        yield seen[sent:]


# Held while a model or the embedder loads: two threads importing transformers' lazy modules at once (the chat
# model's loader and sentence-transformers') can meet in Python's import deadlock detection, which hands one of
# them a half-initialised module ("cannot import name 'AutoModelForCausalLM' from 'transformers'").
HEAVY_LOAD = threading.Lock()


class LazyModel:
    """Wraps a model factory: loading starts at once in a background thread; stream() waits for it."""

    def __init__(self, name: str, factory: Callable[[], Any], *, context_window: int = 0):
        self.name = name
        self._factory = factory
        self._model: Any = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self.load_seconds: float | None = None
        self._declared_window = context_window
        self._thread = threading.Thread(target=self._load, name="model-loader", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        start = time.monotonic()
        try:
            with HEAVY_LOAD:
                self._model = self._factory()
        except BaseException as exc:  # noqa: BLE001 - shown to the user at the first turn
            self._error = exc
        finally:
            self.load_seconds = time.monotonic() - start
            self._ready.set()

    @property
    def state(self) -> str:
        if not self._ready.is_set():
            return "loading"
        return "failed" if self._error else "ready"

    @property
    def error(self) -> str | None:
        return str(self._error) if self._error else None

    def wait(self, timeout: float | None = None) -> Any:
        # Wait in short slices so Ctrl-C reaches the main thread while a model loads.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if deadline is not None and time.monotonic() > deadline:
                raise ModelError(f"model {self.name} is still loading")
        if self._error:
            if isinstance(self._error, AssistantError):
                raise self._error
            raise ModelError(f"could not load model {self.name}: {self._error}") from self._error
        return self._model

    @property
    def context_window(self) -> int:
        if self._ready.is_set() and self._model is not None:
            return self._model.context_window
        return self._declared_window

    @property
    def last_usage(self) -> Usage | None:
        return getattr(self._model, "last_usage", None)

    def describe(self) -> dict[str, Any]:
        """What the dashboard shows of the model (never waits for it): name, state, load time, and what the
        backend says of itself (its describe(), when it has one: parameters, weight bytes, device...)."""
        data: dict[str, Any] = {"name": self.name, "state": self.state}
        if self.load_seconds is not None:
            data["load_seconds"] = round(self.load_seconds, 2)
        inner = getattr(self._model, "describe", None) if self._ready.is_set() else None
        if inner is not None:
            data.update(inner())
        return data

    def stream(self, messages, **kwargs) -> Iterator[str]:
        return self.wait().stream(messages, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.wait(), item)
