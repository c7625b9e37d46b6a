"""The lean decoding loop on the real embedded model: the same greedy tokens as transformers' generate(), the
same tokens with the prefix cache as from a cold start, and replies under the tool grammar that always parse."""

from __future__ import annotations

import os

import pytest

from assistant.config import load_settings
from assistant.errors import FormatError
from assistant.grammar import ToolGrammar, parse_constrained

pytestmark = pytest.mark.model

CHAT = [{"role": "system", "content": "You are a helpful coding assistant."},
        {"role": "user", "content": "Write a Python function that reverses a string, and explain it."}]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The embedded model through the transformers backend (the lean loop on), from the shared model cache."""
    from conftest import SHARED_MODELS

    from assistant.models.registry import REGISTRY, pull
    from assistant.models.transformers_backend import TransformersModel

    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("ASSISTANT_MODELS_DIR")
    os.environ["ASSISTANT_MODELS_DIR"] = str(SHARED_MODELS)
    try:
        path = pull(REGISTRY["smollm2-135m"], quiet=True)
        model = TransformersModel(str(path), load_settings({"workspace": str(tmp_path_factory.mktemp("w")),
                                                            "quantization": "none"}))
    finally:
        if old is None:
            os.environ.pop("ASSISTANT_MODELS_DIR", None)
        else:
            os.environ["ASSISTANT_MODELS_DIR"] = old
    assert model.decoder is not None, "the lean loop should run the embedded (Llama) model"
    return model


def hf_greedy(model, ids: list[int], n: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                   pad_token_id=model.tokenizer.eos_token_id)
    return out[0, len(ids):].tolist()


def lean_greedy(model, ids: list[int], n: int, *, cold: bool) -> list[int]:
    if cold:
        model.decoder.ids.clear()
    return list(model.decoder.generate(ids, n, eos=set()))


def test_greedy_tokens_are_the_same_as_transformers_generate(backend):
    ids = backend.encode(CHAT, 64)
    assert lean_greedy(backend, ids, 48, cold=True) == hf_greedy(backend, ids, 48)


def test_the_prefix_cache_gives_the_same_tokens_as_a_cold_run(backend):
    first = backend.encode(CHAT, 64)
    reply = lean_greedy(backend, first, 24, cold=True)
    later = CHAT + [{"role": "assistant", "content": backend.tokenizer.decode(reply, skip_special_tokens=True)},
                    {"role": "user", "content": "Now make it work on a list too."}]
    ids = backend.encode(later, 64)
    warm = lean_greedy(backend, ids, 24, cold=False)
    reused = backend.decoder.reused
    cold = lean_greedy(backend, ids, 24, cold=True)
    assert reused >= len(first) - 1, "the earlier turn's prompt should come from the cache"
    assert backend.decoder.reused == 0
    assert warm == cold


def test_stream_reports_the_reused_prompt_tokens(backend):
    backend.decoder.ids.clear()
    "".join(backend.stream(CHAT, max_new_tokens=4))
    assert backend.last_usage.cached_tokens == 0
    "".join(backend.stream(CHAT + [{"role": "assistant", "content": "Sure."}, {"role": "user", "content": "Go on."}],
                           max_new_tokens=4))
    assert backend.last_usage.cached_tokens > 20


def test_int8_weights_keep_the_prefix_cache_exact_and_the_text_close(backend):
    """int8 mode has its own numerics (the text may differ from float32), but the cache must still give the same
    tokens as a cold run, and the reply must stay close to float32's (same opening tokens on this prompt)."""
    from assistant.models.decoder import Decoder

    int8 = Decoder(backend.model, 2048, int8=True)
    ids = backend.encode(CHAT, 64)
    cold = list(int8.generate(ids, 24, eos=set()))
    assert int8.reused == 0
    warm = list(int8.generate(ids, 24, eos=set()))
    assert int8.reused == len(ids) - 1
    assert warm == cold
    assert cold[:8] == lean_greedy(backend, ids, 8, cold=True)


PROMPTS = ["Which files are in this folder?", "What is 12345 * 6789? Use Python.", "Read the file setup.cfg.",
           "Show me the git log.", "Hello! Who are you?", "Find where parse_config is defined."]


def test_constrained_replies_of_the_real_model_always_parse(backend, tmp_path):
    from assistant import prompts
    from assistant.loader import load_plugins

    tools = load_plugins().tools
    grammar = ToolGrammar(tools)
    base = [prompts.system_message(tools, str(tmp_path))] + prompts.few_shot(tools)
    calls = cut = 0
    for text in PROMPTS:
        reply = "".join(backend.stream(base + [{"role": "user", "content": text}], max_new_tokens=96,
                                       grammar=grammar))
        assert reply.strip(), text
        try:
            calls += bool(parse_constrained(reply, tools))
        except FormatError:
            # The only way a constrained reply fails: the model looped inside a string until the budget ran out.
            assert backend.last_usage.completion_tokens == 96, reply
            cut += 1
    assert calls >= 3, "the few-shot prompt should make the model call tools on most of these"
    assert cut <= 2


def test_generate_path_applies_the_grammar_too(tmp_path, shared_models):
    """Architectures the lean loop does not cover decode with generate() and a logits processor: same rules."""
    from assistant import prompts
    from assistant.loader import load_plugins
    from assistant.models.registry import REGISTRY, pull
    from assistant.models.transformers_backend import TransformersModel

    model = TransformersModel(str(pull(REGISTRY["smollm2-135m"], quiet=True)),
                              load_settings({"workspace": str(tmp_path), "decoder": "generate"}))
    assert model.decoder is None and model.decoding == "transformers generate()"
    tools = load_plugins().tools
    base = [prompts.system_message(tools, str(tmp_path))] + prompts.few_shot(tools)
    reply = "".join(model.stream(base + [{"role": "user", "content": "Which files are in this folder?"}],
                                 max_new_tokens=64, grammar=ToolGrammar(tools)))
    assert len(parse_constrained(reply, tools)) == 1
