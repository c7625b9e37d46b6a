"""In-process Hugging Face models (a model folder or a GGUF file) streamed with TextIteratorStreamer.

A GGUF file is dequantised by transformers on load, which is slow (about 16 s for the 135M model here), so the
first load converts it once to a cached HF folder; later loads read that folder (well under a second) and
bitsandbytes quantisation can then apply to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from assistant.errors import ModelError
from assistant.home import models_dir
from assistant.models import Usage, cut_at_stops, find_stop
from assistant.models.decoder import Decoder, unsupported_reason

log = logging.getLogger("assistant.models")

DTYPES = ("auto", "float32", "bfloat16", "float16")


def converted_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return models_dir() / "converted" / f"{gguf.stem}-{key}"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a cached HF folder (safetensors + tokenizer); returns the folder."""
    out = converted_dir(gguf)
    if (out / ".complete").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    log.info("converting %s to a cached model folder (once)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain tensors after dequantisation; drop the GGUF quantiser so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / ".complete").write_text(str(gguf) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def counting_streamer(tokenizer):
    """A TextIteratorStreamer that also counts generated tokens and notes when the first one came."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        generated = 0
        first_token_at: float | None = None

        def put(self, value):
            if not (self.skip_prompt and self.next_tokens_are_prompt):
                self.generated += int(value.numel())
                if self.first_token_at is None:
                    self.first_token_at = time.monotonic()
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _stop_in_reply_class():
    import torch
    from transformers import StoppingCriteria

    class StopInReply(StoppingCriteria):
        """Per sequence: stop once a stop string appears in the generated text (transformers' own stop_strings
        also match across the prompt's end, so a reply opening with ``` would stop at once on "\\n```"; and
        find_stop does not take the fence that opens a block for its end)."""

        def __init__(self, tokenizer, prompt_len: int, stops: list[str]):
            self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

        def __call__(self, input_ids, scores, **kwargs):
            done = []
            for row in input_ids:
                text = self.tokenizer.decode(row[self.prompt_len:], skip_special_tokens=True)
                done.append(find_stop(text, self.stops) is not None)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopInReply


class GrammarProcessor:
    """A constraint as a transformers logits processor (the generate() path): told each chosen token, then masks."""

    def __init__(self, constraint, prompt_len: int):
        self.constraint, self.prompt_len = constraint, prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] > self.prompt_len:
            self.constraint.advance(int(input_ids[0, -1]))
        return self.constraint.mask(scores)


def StopInReply(tokenizer, prompt_len: int, stops: list[str]):  # noqa: N802 - builds the class lazily (torch)
    return _stop_in_reply_class()(tokenizer, prompt_len, stops)


class TransformersModel:
    def __init__(self, source: str, settings: Any, *, name: str | None = None):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelError(f"model path {source} does not exist")
        self.name = name or path.name
        self.settings = settings
        self.from_gguf = path.suffix == ".gguf"  # quantised weights to begin with (dequantised to float32 on load)
        if self.from_gguf:
            path = convert_gguf(path)
        elif not (path / "config.json").exists():
            raise ModelError(f"{source}: not a model folder (no config.json) and not a .gguf file")
        self.path = path
        self._load()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        s = self.settings
        kwargs: dict[str, Any] = {"trust_remote_code": s.trust_remote_code}
        if s.torch_dtype not in DTYPES:
            raise ModelError(f"--torch-dtype must be one of {', '.join(DTYPES)}")
        if s.torch_dtype != "auto":
            kwargs["dtype"] = getattr(torch, s.torch_dtype)
        if s.device_map:
            kwargs["device_map"] = s.device_map
        if s.low_cpu_mem_usage:
            kwargs["low_cpu_mem_usage"] = True
        if s.quantization not in ("none", "int8", "auto"):
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                raise ModelError("--quantization needs bitsandbytes: pip install 'assistant[quant]'") from None
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=s.quantization == "8bit", load_in_4bit=s.quantization == "4bit"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), trust_remote_code=s.trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(str(self.path), **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load {self.path}: {str(exc).splitlines()[0]}") from exc
        self.model.eval()
        configured = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.context_window = int(s.context_window or configured)
        self.last_usage: Usage | None = None
        self._lock = threading.Lock()
        self.decoder = None
        reason = "turned off (--decoder generate)" if s.decoder == "generate" else unsupported_reason(self.model)
        # auto: int8 for a GGUF file on the CPU, whose weights were quantised to begin with.
        int8 = s.quantization == "int8" or (s.quantization == "auto" and self.from_gguf
                                            and self.model.device.type == "cpu")
        if reason is None:
            self.decoder = Decoder(self.model, self.context_window, int8=int8)
        elif s.quantization == "int8":
            raise ModelError(f"--quantization int8 needs the lean decoding loop, which cannot run this model ({reason})")
        else:
            log.info("lean decoding loop not used (%s): transformers' generate() runs instead", reason)
        self.decoding = ("lean loop, prefix cache" + (", int8 weights" if int8 else "")) if self.decoder else \
            "transformers generate()"
        if s.constrain:  # about a second: here in the loader thread rather than in the first constrained reply
            from assistant.grammar import ll_tokenizer

            ll_tokenizer(self.tokenizer)

    supports_grammar = True

    def describe(self) -> dict[str, Any]:
        if getattr(self, "_described", None) is None:
            params = list(self.model.parameters())
            self._described = {
                "backend": "transformers", "parameters": sum(p.numel() for p in params),
                "weights_bytes": sum(p.numel() * p.element_size() for p in params),
                "dtype": str(self.model.dtype).removeprefix("torch."), "device": str(self.model.device),
                "decoding": self.decoding, "context_window": self.context_window,
            }
        return dict(self._described)

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        return {int(i) for i in ids if i is not None}

    def _constraint(self, grammar: object | None):
        if grammar is None:
            return None
        from assistant.grammar import Constraint, ll_tokenizer

        try:
            return Constraint(grammar, ll_tokenizer(self.tokenizer))
        except ValueError as exc:
            raise ModelError(str(exc)) from None

    def _template(self, messages: list[dict]) -> list[int]:
        kwargs = {}
        if self.settings.enable_thinking is not None:
            kwargs["enable_thinking"] = self.settings.enable_thinking
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def encode(self, messages: list[dict], max_new_tokens: int) -> list[int]:
        """Token ids of the prompt, cut to fit the context window (oldest turns first) with a warning."""
        budget = self.context_window - max_new_tokens
        if budget <= 0:
            raise ModelError(f"--max-new-tokens {max_new_tokens} leaves no room in a {self.context_window}-token window")
        ids = self._template(messages)
        if len(ids) <= budget:
            return ids
        kept = list(messages)
        first = 1 if kept and kept[0]["role"] == "system" else 0
        dropped = 0
        while len(ids) > budget and len(kept) - first > 1:
            del kept[first]
            dropped += 1
            ids = self._template(kept)
        if len(ids) > budget:
            ids = ids[-budget:]
        log.warning("prompt cut to fit the %d-token context window (%d oldest messages dropped)",
                    self.context_window, dropped)
        return ids

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, stop: Iterable[str] = (),
               temperature: float = 0.0, grammar: object | None = None) -> Iterator[str]:
        """The reply, piece by piece. With `grammar` (an assistant.grammar.ToolGrammar) every token is chosen
        among those the grammar allows: the reply is a plain answer or one valid tool call."""
        if self.decoder is not None:
            return cut_at_stops(self._decode(messages, max_new_tokens, temperature, grammar), stop)
        return cut_at_stops(self._generate(messages, max_new_tokens, temperature, grammar), stop)

    def _decode(self, messages: list[dict], max_new_tokens: int, temperature: float,
                grammar: object | None) -> Iterator[str]:
        """The lean loop (assistant.models.decoder): text is decoded from all tokens so far, so a character
        split across tokens is only sent once whole."""
        ids = self.encode(messages, max_new_tokens)
        constraint = self._constraint(grammar)
        tokens: list[int] = []
        sent, first = "", None
        start = time.monotonic()
        with self._lock:
            try:
                for token in self.decoder.generate(ids, max_new_tokens, eos=self._eos_ids(), temperature=temperature,
                                                   constraint=constraint):
                    if first is None:
                        first = time.monotonic() - start
                    tokens.append(token)
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    if len(text) > len(sent) and not text.endswith("\ufffd"):
                        yield text[len(sent):]
                        sent = text
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"generation failed: {exc}") from exc
            finally:
                self.last_usage = Usage(len(ids), len(tokens), time.monotonic() - start, first,
                                        cached_tokens=getattr(self.decoder, "reused", 0))
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if len(text) > len(sent):
            yield text[len(sent):]

    def _generate(self, messages: list[dict], max_new_tokens: int, temperature: float,
                  grammar: object | None = None) -> Iterator[str]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        ids = self.encode(messages, max_new_tokens)
        cancel = threading.Event()

        class Cancel(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return cancel.is_set()

        streamer = counting_streamer(self.tokenizer)
        input_ids = torch.tensor([ids], device=self.model.device)
        constraint = self._constraint(grammar)
        gen_kwargs = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([Cancel()]),
            logits_processor=LogitsProcessorList([GrammarProcessor(constraint, len(ids))]) if constraint else None,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            do_sample=temperature > 0,
        )
        if temperature > 0:
            gen_kwargs["temperature"] = temperature
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**gen_kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failure.append(exc)
                streamer.end()

        start = time.monotonic()
        with self._lock:
            thread = threading.Thread(target=work, name="generate", daemon=True)
            thread.start()
            try:
                for text in streamer:
                    if text:
                        yield text
            finally:
                cancel.set()  # Ctrl-C or a closed iterator: stop at the next token
                while thread.is_alive():
                    thread.join(0.1)
                elapsed = time.monotonic() - start
                first = streamer.first_token_at - start if streamer.first_token_at else None
                self.last_usage = Usage(len(ids), streamer.generated, elapsed, first)
        if failure:
            raise ModelError(f"generation failed: {failure[0]}") from failure[0]

    def generate_batch(self, messages: list[dict], *, n: int, max_new_tokens: int = 256, stop: Iterable[str] = (),
                       temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> list[str]:
        """`n` replies to one prompt in one batched generate call (much cheaper per reply than n calls on a
        CPU); greedy when temperature is 0 (then n is 1). Each reply stops at its first stop string."""
        import torch
        from transformers import StoppingCriteriaList

        ids = self.encode(messages, max_new_tokens)
        greedy = temperature <= 0
        n = 1 if greedy else max(1, int(n))
        input_ids = torch.tensor([ids], device=self.model.device)
        stops = [s for s in stop if s]
        gen_kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id, do_sample=not greedy,
            num_return_sequences=n)
        if stops:
            gen_kwargs["stopping_criteria"] = StoppingCriteriaList([StopInReply(self.tokenizer, len(ids), stops)])
        if not greedy:
            gen_kwargs.update(temperature=temperature, top_p=top_p)
        start = time.monotonic()
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed)
            try:
                with torch.inference_mode():
                    out = self.model.generate(**gen_kwargs)
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"generation failed: {exc}") from exc
        specials = {self.tokenizer.pad_token_id, self.tokenizer.eos_token_id} - {None}
        texts, generated = [], 0
        for row in out:
            new = [int(t) for t in row[len(ids):]]
            generated += sum(t not in specials for t in new)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            at = find_stop(text, stops)
            texts.append(text if at is None else text[:at])
        self.last_usage = Usage(len(ids) * n, generated, time.monotonic() - start)
        return texts
