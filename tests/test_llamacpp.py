"""The optional llama.cpp backend: a clear error without llama-cpp-python; with it (make llamacpp), the real
embedded GGUF answers, and under the tool grammar (GBNF, parsed by llama.cpp itself) every reply parses."""

from __future__ import annotations

import sys

import pytest

from assistant.config import load_settings
from assistant.errors import ModelError


def test_without_llama_cpp_python_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    from assistant.loader import load_plugins
    from assistant.models.builtin import load_model

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    model = load_model(load_settings({"model": f"llamacpp:{gguf}", "workspace": str(tmp_path)}), load_plugins())
    with pytest.raises(ModelError, match="make llamacpp"):
        model.wait()


def test_a_missing_or_wrong_file_is_one_line(tmp_path):
    pytest.importorskip("llama_cpp")
    from assistant.models.llamacpp_backend import LlamaCppModel

    settings = load_settings({"workspace": str(tmp_path)})
    with pytest.raises(ModelError, match="is not a file"):
        LlamaCppModel(str(tmp_path / "absent.gguf"), settings)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="not a .gguf file"):
        LlamaCppModel(str(tmp_path / "notes.txt"), settings)


@pytest.mark.model
def test_the_real_gguf_under_the_tool_grammar_always_gives_valid_calls(tmp_path, shared_models):
    pytest.importorskip("llama_cpp")
    from assistant import prompts
    from assistant.grammar import ToolGrammar, parse_constrained
    from assistant.loader import load_plugins
    from assistant.models.llamacpp_backend import LlamaCppModel
    from assistant.models.registry import REGISTRY, pull

    model = LlamaCppModel(str(pull(REGISTRY["smollm2-135m"], quiet=True)),
                          load_settings({"workspace": str(tmp_path), "context_window": 2048}))
    tools = load_plugins().tools
    grammar = ToolGrammar(tools)
    base = [prompts.system_message(tools, str(tmp_path))] + prompts.few_shot(tools)
    calls = 0
    for text in ("Which files are in this folder?", "What is 2**100? Use Python.", "Read the file setup.cfg."):
        reply = "".join(model.stream(base + [{"role": "user", "content": text}], max_new_tokens=96, grammar=grammar))
        calls += bool(parse_constrained(reply, tools))  # a FormatError here would be an invalid constrained reply
    assert calls >= 2
    assert "".join(model.stream([{"role": "user", "content": "Say hello."}], max_new_tokens=8)).strip()
