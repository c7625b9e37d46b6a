"""Where runtime data lives: ASSISTANT_HOME (default ~/.local/share/assistant), never the repository."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    explicit = os.environ.get("ASSISTANT_HOME")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        from platformdirs import user_data_path

        path = user_data_path("assistant")
    return path


def subdir(name: str) -> Path:
    """A folder under the home (models, logs, memory_bank, runs, undo), created on first use."""
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """The model cache: ASSISTANT_MODELS_DIR if set (tests share one cache this way), else <home>/models."""
    explicit = os.environ.get("ASSISTANT_MODELS_DIR")
    path = Path(explicit).expanduser() if explicit else home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
