"""A lean decoding loop for Llama-family models in process (Llama, Mistral without a sliding window, Qwen2).

Why: on a 2-core CPU, transformers' generate() spends most of each token issuing small operations from Python
(per-module dispatch, mask and cache bookkeeping, logits processors) rather than in the matrix products. This
loop runs the same weights with fused QKV and gate/up projections, a preallocated KV cache written in place, SDPA
attention with grouped KV heads and the LM head on the last position only, and runs the layer stack from
TorchScript (assistant/models/decoder_script.py), which halves the cost of issuing the operations. The cache is kept between calls: a new prompt that starts with the tokens already in the cache
(the system prompt, the tool list, the earlier turns of the conversation) only prefills what is new.

The arithmetic is transformers' own, op for op in float32, so greedy decoding gives the same tokens
(tests/test_decoder.py compares them; different attention kernels round differently, so a near-tie can still
flip after a hundred tokens or so). Anything it does not support falls back to generate().

With int8 weights (`--quantization int8`) each decoded token reads a quarter of the bytes and takes a shorter
path (fused RMSNorm, attention as two batched products); prompts still go through the float weights (the int8
kernel quantises a whole batch of activations with one scale, which the first tokens' huge activations make
coarse), so the prefix cache holds the same keys and values in both modes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator

SUPPORTED = ("llama", "mistral", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")


def unsupported_reason(model: Any) -> str | None:
    """Why the lean loop cannot run `model` (then generate() does), or None when it can."""
    cfg = model.config
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"architecture {kind!r}"
    if getattr(model, "hf_quantizer", None) is not None or getattr(model, "is_quantized", False):
        return "quantized weights"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act}"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", kind == "mistral"):
        return "sliding-window attention"
    devices = set((getattr(model, "hf_device_map", None) or {}).values())
    if len(devices) > 1:
        return "a model split across devices"
    rope = (getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    if rope.get("rope_type", rope.get("type", "default")) not in STATIC_ROPE:
        return f"rope type {rope.get('rope_type')}"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(getattr(inner, "rotary_emb", None), "inv_freq"):
        return "no rotary embedding module"
    return None


def _eps(norm: Any) -> float:
    return float(getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None) or 1e-6)


def _int8(weight: Any, bias: Any) -> Any:
    """fbgemm's packed int8 form of a projection: weights quantised per output channel (the kernel quantises the
    activations per call)."""
    import torch

    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
    zeros = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # "quantize_per_channel is deprecated, use torchao": not a dependency here
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float())


def _fuse(linears: list[Any]) -> tuple[Any, Any]:
    """One weight (and bias) for several projections of the same input. The modules' own parameters become views
    into it, so the weights are held once and generate() still sees them."""
    import torch

    weight = torch.cat([lin.weight.data for lin in linears], 0)
    biases = [lin.bias for lin in linears]
    bias = None if all(b is None for b in biases) else torch.cat(
        [b.data if b is not None else torch.zeros(lin.weight.shape[0], dtype=weight.dtype, device=weight.device)
         for b, lin in zip(biases, linears)], 0)
    at = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = weight[at:at + rows]
        if lin.bias is not None:
            lin.bias.data = bias[at:at + rows]
        at += rows
    return weight, bias


class Decoder:
    """Prefill and decode for one sequence at a time, with the KV cache kept across calls."""

    def __init__(self, model: Any, max_len: int, *, int8: bool = False):
        import torch

        from assistant.models import decoder_script

        cfg = model.config
        inner = model.model
        self.device = model.device
        self.dtype = model.dtype
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        self.max_len = int(max_len)
        self.embed = inner.embed_tokens.weight
        self.lm_head, self.lm_bias = model.lm_head.weight, getattr(model.lm_head, "bias", None)
        self.norm, self.norm_eps = inner.norm.weight, _eps(inner.norm)
        self.eps = _eps(inner.layers[0].input_layernorm)
        self.n1 = [layer.input_layernorm.weight for layer in inner.layers]
        self.n2 = [layer.post_attention_layernorm.weight for layer in inner.layers]
        projections = {
            "qkv": [_fuse([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in inner.layers],
            "o": [(l.self_attn.o_proj.weight, l.self_attn.o_proj.bias) for l in inner.layers],
            "gu": [_fuse([l.mlp.gate_proj, l.mlp.up_proj]) for l in inner.layers],
            "dn": [(l.mlp.down_proj.weight, l.mlp.down_proj.bias) for l in inner.layers],
        }
        self.float_weights = {}
        for name, pairs in projections.items():
            self.float_weights[name + "_w"] = [w for w, _ in pairs]
            self.float_weights[name + "_b"] = [b for _, b in pairs]
        self.int8 = int8
        self.int8_weights = {name: [_int8(w, b) for w, b in pairs] for name, pairs in projections.items()} \
            if int8 else None
        self.lm_int8 = _int8(self.lm_head, self.lm_bias) if int8 else None
        self._float_layers = decoder_script.compiled("float")
        self._int8_layers = decoder_script.compiled("int8") if int8 else None
        rope = inner.rotary_emb
        self.inv_freq = rope.inv_freq.to(device=self.device, dtype=torch.float)
        self.rope_scaling = float(getattr(rope, "attention_scaling", 1.0))
        shape = (len(inner.layers), 1, self.kv_heads, self.max_len, self.head_dim)
        # Untouched pages of torch.empty are not resident: a long window costs memory only as it fills.
        self.k = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.v = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.ids: list[int] = []  # the tokens whose keys and values are in the cache, in order
        self.reused = 0  # how many prompt tokens the last prefill took from the cache

    def _rope(self, positions) -> tuple[Any, Any]:
        import torch

        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        # Shaped (1, tokens, 1, head_dim): broadcast over heads in the (batch, tokens, heads, dim) layout.
        return ((emb.cos() * self.rope_scaling).to(self.dtype)[None, :, None],
                (emb.sin() * self.rope_scaling).to(self.dtype)[None, :, None])

    def _check(self, end: int) -> None:
        if end > self.max_len:
            raise ValueError(f"{end} tokens do not fit the {self.max_len}-token context window")

    def forward(self, tokens: list[int], start: int):
        """Run `tokens` at positions start.. through the float weights (the cache must hold exactly the `start`
        tokens before them); returns the logits of the last position as a (1, vocab) float32 tensor."""
        import torch
        import torch.nn.functional as F

        from assistant.models import decoder_script

        n = len(tokens)
        end = start + n
        self._check(end)
        with torch.inference_mode():
            x = F.embedding(torch.tensor([tokens], device=self.device), self.embed)
            cos, sin = self._rope(torch.arange(start, end, device=self.device))
            if n == 1 or start == 0:
                mask, causal = None, n > 1
            else:  # a new chunk after cached tokens: each row sees the cache and the chunk up to itself
                mask = torch.ones(n, end, dtype=torch.bool, device=self.device).tril(start)
                causal = False
            x = self._float_layers(x, cos, sin, start, mask, causal, self.k, self.v, self.n1, self.n2, self.eps,
                                   heads=self.heads, kv_heads=self.kv_heads, hd=self.head_dim, scaling=self.scaling,
                                   **self.float_weights)
            last = decoder_script.rms_norm(x[:, -1:], self.norm, self.norm_eps)
            return F.linear(last, self.lm_head, self.lm_bias)[:, -1].float()

    def _one_int8(self, token: int, pos: int):
        """One token at `pos` through the int8 weights (decoder_script.int8_layers)."""
        import torch

        self._check(pos + 1)
        with torch.inference_mode():
            cos, sin = self._rope(torch.tensor([pos], device=self.device))
            w = self.int8_weights
            x = self._int8_layers(self.embed[token:token + 1], cos[0, 0], sin[0, 0], pos, self.k, self.v, self.n1,
                                  self.n2, self.eps, w["qkv"], w["o"], w["gu"], w["dn"], self.heads, self.kv_heads,
                                  self.head_dim, self.scaling)
            last = torch.rms_norm(x, [x.shape[-1]], self.norm, self.norm_eps)
            return torch.ops.quantized.linear_dynamic(last, self.lm_int8, True).float()

    def prefill(self, prompt: list[int]):
        """Logits after `prompt`, reusing the cached tokens it starts with; at least its last token is run."""
        same = 0
        limit = min(len(self.ids), len(prompt) - 1)
        while same < limit and self.ids[same] == prompt[same]:
            same += 1
        del self.ids[same:]
        logits = self.forward(prompt[same:], same)
        self.ids.extend(prompt[same:])
        self.reused = same
        return logits

    def step(self, token: int):
        pos = len(self.ids)
        logits = self._one_int8(token, pos) if self.int8 else self.forward([token], pos)
        self.ids.append(token)
        return logits

    def generate(self, prompt: list[int], max_new_tokens: int, *, eos: set[int], temperature: float = 0.0,
                 top_p: float = 1.0, constraint: Any = None) -> Iterator[int]:
        """Yield new token ids until EOS, `max_new_tokens`, the context window, or the constraint's end (closing
        the iterator stops it too: Ctrl-C, a stop string).

        A constraint (assistant.grammar.Constraint) masks the logits before each choice and is told each token."""
        import torch

        logits = self.prefill(prompt)
        for _ in range(max_new_tokens):
            if constraint is not None:
                logits = constraint.mask(logits)
            if temperature > 0:
                token = _sample(logits, temperature, top_p)
            else:
                token = int(torch.argmax(logits, dim=-1))
            if constraint is not None:
                constraint.advance(token)
            if token in eos:
                return
            yield token
            if (constraint is not None and constraint.done()) or len(self.ids) + 1 >= self.max_len:
                return
            logits = self.step(token)


def _sample(logits, temperature: float, top_p: float) -> int:
    import torch

    probs = torch.softmax(logits[0] / temperature, dim=-1)
    if 0 < top_p < 1:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, 0) - ordered < top_p
        ordered = ordered * keep
        return int(order[torch.multinomial(ordered / ordered.sum(), 1)])
    if not math.isfinite(float(probs.sum())):
        return int(torch.argmax(logits[0]))
    return int(torch.multinomial(probs, 1))
