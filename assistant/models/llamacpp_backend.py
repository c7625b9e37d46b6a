"""A GGUF file through llama.cpp in process (llama-cpp-python, an optional extra): `--model llamacpp:FILE.gguf`.

llama.cpp runs the quantised weights as they are (no dequantisation to float32), keeps its KV cache between
calls and reuses the common prompt prefix itself, and takes the tool grammar as GBNF. Install with
`make llamacpp` (builds the wheel once with the CPU flags that work here and caches it; see docs/user-guide.md).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from assistant.errors import ModelError
from assistant.models import Usage, cut_at_stops

INSTALL_HINT = ("the llamacpp backend needs llama-cpp-python: run `make llamacpp` (builds it once, about 6 minutes) "
                "or `pip install '.[llamacpp]'`")


class LlamaCppModel:
    supports_grammar = True

    def __init__(self, source: str, settings: Any):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelError(INSTALL_HINT) from None
        path = Path(source).expanduser()
        if not path.is_file():
            raise ModelError(f"llamacpp: {source} is not a file")
        if path.suffix != ".gguf":
            raise ModelError(f"llamacpp: {source} is not a .gguf file")
        self.name = path.name
        self.path = path
        self.context_window = int(settings.context_window or 4096)
        try:
            self.llm = Llama(model_path=str(path), n_ctx=self.context_window, n_threads=os.cpu_count() or 1,
                             verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llamacpp: could not load {path.name}: {exc}") from None
        self.last_usage: Usage | None = None
        self._grammars: dict[str, Any] = {}  # by GBNF text
        self._lock = threading.Lock()

    def describe(self) -> dict:
        return {"backend": "llama.cpp", "weights_bytes": self.path.stat().st_size, "context_window": self.context_window}

    def _grammar(self, grammar: Any) -> Any:
        from llama_cpp import LlamaGrammar

        key = grammar.gbnf
        if key not in self._grammars:
            try:
                self._grammars[key] = LlamaGrammar.from_string(grammar.gbnf, verbose=False)
            except ValueError as exc:
                raise ModelError(f"llama.cpp rejected the tool grammar: {exc}") from None
        return self._grammars[key]

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, stop: Iterable[str] = (),
               temperature: float = 0.0, grammar: object | None = None) -> Iterator[str]:
        return cut_at_stops(self._stream(messages, max_new_tokens, temperature, grammar), stop)

    def _stream(self, messages: list[dict], max_new_tokens: int, temperature: float, grammar: Any) -> Iterator[str]:
        kwargs: dict[str, Any] = dict(messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                                      stream=True)
        if grammar is not None:
            kwargs["grammar"] = self._grammar(grammar)
        start, first, count = time.monotonic(), None, 0
        with self._lock:
            try:
                for chunk in self.llm.create_chat_completion(**kwargs):
                    text = (chunk["choices"][0].get("delta") or {}).get("content") or ""
                    if text:
                        count += 1
                        first = first or time.monotonic() - start
                        yield text
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"llama.cpp generation failed: {exc}") from None
            finally:
                self.last_usage = Usage(0, count, time.monotonic() - start, first)
