"""Persistent memory: notes (notes.py), a vector store (store.py) over MiniLM embeddings (embeddings.py), recall
(memory.py), and the code search index (chunking.py, code_index.py). Only paths here: this package's modules
import numpy and faiss, which stay off the REPL's start-up path until they are needed."""

from __future__ import annotations

from pathlib import Path


def workspace_memory_dir(workspace: str | Path) -> Path:
    """A workspace's own memory (its answered turns)."""
    return Path(workspace) / ".assistant" / "memory"


def workspace_index_dir(workspace: str | Path) -> Path:
    """A workspace's search index."""
    return Path(workspace) / ".assistant" / "index"
