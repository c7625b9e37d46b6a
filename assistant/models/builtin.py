"""The built-in model backends and how a model spec picks one (a plugin like any other)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from assistant.errors import ModelError
from assistant.hookspecs import hookimpl
from assistant.models import LazyModel


def _scripted(rest: str, settings: Any):
    from assistant.models.scripted import ScriptedModel

    return ScriptedModel.from_file(rest)


def _openai(rest: str, settings: Any):
    from assistant.models.openai_backend import OpenAIModel

    key = settings.api_key or os.environ.get("OPENAI_API_KEY")
    return OpenAIModel(rest, settings.model_name, api_key=key, timeout=settings.request_timeout,
                       context_window=settings.context_window, grammar_mode=settings.server_grammar)


def _ollama(rest: str, settings: Any):
    from assistant.models.openai_backend import OpenAIModel

    host = os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434")
    if not host.startswith("http"):
        host = "http://" + host
    return OpenAIModel(host.rstrip("/") + "/v1", rest, timeout=settings.request_timeout,
                       context_window=settings.context_window, grammar_mode=settings.server_grammar)


def _transformers(rest: str, settings: Any):
    from assistant.models.transformers_backend import TransformersModel

    return TransformersModel(rest, settings)


def _llamacpp(rest: str, settings: Any):
    from assistant.models.llamacpp_backend import LlamaCppModel
    from assistant.models.registry import REGISTRY, pull

    if rest in REGISTRY:  # llamacpp:smollm2-135m runs the registry's GGUF file
        rest = str(pull(REGISTRY[rest], quiet=True))
    return LlamaCppModel(rest, settings)


def _hf(rest: str, settings: Any):
    from assistant.models.registry import pull_hf
    from assistant.models.transformers_backend import TransformersModel

    repo, _, revision = rest.partition("@")
    return TransformersModel(str(pull_hf(repo, revision=revision or "main")), settings, name=repo)


def _registry(rest: str, settings: Any):
    from assistant.models.registry import REGISTRY, pull
    from assistant.models.transformers_backend import TransformersModel

    entry = REGISTRY[rest]
    return TransformersModel(str(pull(entry, quiet=True)), settings, name=entry.name)


@hookimpl
def register_models(register):
    register("scripted", _scripted)
    register("openai", _openai)
    register("ollama", _ollama)
    register("hf", _hf)
    register("llamacpp", _llamacpp)
    register("transformers", _transformers)
    register("registry", _registry)


def resolve(spec: str, settings: Any, factories: dict[str, Any]) -> tuple[str, Any]:
    """(display name, zero-argument factory) for a model spec; raises ModelError for a spec that means nothing."""
    from assistant.models.registry import REGISTRY

    prefix, sep, rest = spec.partition(":")
    if sep and prefix in factories and prefix not in ("registry",):
        if not rest:
            raise ModelError(f"model spec {spec!r} needs something after '{prefix}:'")
        return spec, lambda: factories[prefix](rest, settings)
    if spec in REGISTRY:
        return spec, lambda: factories["registry"](spec, settings)
    if spec == "improved":  # the model `assistant improve` promoted last
        from assistant.improve import current_promoted

        promoted = current_promoted()
        if promoted is None:
            raise ModelError("no improved model yet: `assistant improve` promotes one when it beats the old one")
        spec = promoted["path"]
    path = Path(spec).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return path.name, lambda: factories["transformers"](str(path), settings)
    known = ", ".join(sorted(REGISTRY))
    raise ModelError(
        f"unknown model {spec!r}: not a model folder, a .gguf file, a registry name ({known}), "
        "`improved`, or a prefixed spec (openai:URL, ollama:NAME, hf:ORG/NAME, llamacpp:FILE.gguf, scripted:FILE)"
    )


def load_model(settings: Any, registry) -> LazyModel:
    """Start loading the configured model in the background and return at once."""
    name, factory = resolve(settings.model, settings, registry.models)
    return LazyModel(name, factory, context_window=settings.context_window or 0)
