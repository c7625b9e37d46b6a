"""A lean decoding loop for Llama-family models in process (Llama, Mistral without a sliding window, Qwen2).

Why: on a 2-core CPU, transformers' generate() spends most of each token in Python (per-module dispatch, mask
and cache bookkeeping, logits processors) rather than in the matrix products; for the 135M model that was
about 2/3 of the time per token. This loop runs the same weights with fused QKV and gate/up projections, a
preallocated KV cache written in place, SDPA attention with grouped KV heads, and the LM head applied to the last
position only. The cache is kept between calls: a new prompt that starts with the tokens already in the cache
(the system prompt, the tool list, the earlier turns of the conversation) only prefills what is new.

The arithmetic is transformers' own, op for op in float32, so greedy decoding gives the same tokens
(tests/test_decoder.py compares them; different attention kernels round differently, so a near-tie can still
flip after a hundred tokens or so). Anything it does not support falls back to generate().

With int8 weights (`--quantization int8`) each decoded token reads a quarter of the bytes and takes a shorter
path (fused RMSNorm, attention as two batched products); prompts still go through the float weights, so the
prefix cache holds the same keys and values in both modes.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator

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


def _norm(module: Any) -> tuple[Any, float]:
    """(weight, epsilon) of an RMSNorm module."""
    eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None) or 1e-6
    return module.weight, float(eps)


class _Linear:
    """A projection: float (F.linear on the model's own weights) or, for one token at a time, int8 (weights
    quantised per output channel, activations per call: fbgemm's dynamic int8 kernels on x86, 4x fewer bytes to
    read per token)."""

    def __init__(self, weight: Any, bias: Any, int8: bool):
        import torch

        self.weight, self.bias, self.packed = weight, bias, None
        if int8:
            w = weight.detach().float()
            scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
            zeros = torch.zeros(w.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # "quantize_per_channel is deprecated, use torchao": not a dependency
                warnings.simplefilter("ignore")
                q = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float())

    def exact(self, x: Any) -> Any:
        """Through the float weights: prompts (compute-bound there anyway; and the int8 kernel quantises the
        activations of a whole batch with one scale, which the first tokens' huge activations make coarse)."""
        import torch.nn.functional as F

        return F.linear(x, self.weight, self.bias)

    def __call__(self, x: Any) -> Any:
        import torch

        if self.packed is None:
            return self.exact(x)
        return torch.ops.quantized.linear_dynamic(x.float(), self.packed, True).to(x.dtype)


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """transformers' RMSNorm, op for op (torch's fused rms_norm rounds differently: greedy text drifted after
    ~120 tokens in a test)."""
    import torch

    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


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

        self.model = model
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
        self.norm = _norm(inner.norm)
        self.int8 = int8
        self.lm_head = _Linear(model.lm_head.weight, getattr(model.lm_head, "bias", None), int8)
        self.layers = []
        for layer in inner.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv, qkv_bias = _fuse([att.q_proj, att.k_proj, att.v_proj])
            gate_up, gate_up_bias = _fuse([mlp.gate_proj, mlp.up_proj])
            self.layers.append((_norm(layer.input_layernorm), _Linear(qkv, qkv_bias, int8),
                                _Linear(att.o_proj.weight, att.o_proj.bias, int8), _norm(layer.post_attention_layernorm),
                                _Linear(gate_up, gate_up_bias, int8), _Linear(mlp.down_proj.weight, mlp.down_proj.bias, int8)))
        rope = inner.rotary_emb
        self.inv_freq = rope.inv_freq.to(device=self.device, dtype=torch.float)
        self.rope_scaling = float(getattr(rope, "attention_scaling", 1.0))
        shape = (len(self.layers), 1, self.kv_heads, self.max_len, self.head_dim)
        self.k = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.v = torch.empty(shape, dtype=self.dtype, device=self.device)
        # Untouched pages of torch.empty are not resident: a long window costs memory only as it fills.
        self.ids: list[int] = []  # the tokens whose keys and values are in the cache, in order
        self.reused = 0  # how many prompt tokens the last prefill took from the cache
        self.q_size = self.heads * self.head_dim
        self.kv_size = self.kv_heads * self.head_dim

    def _rope(self, positions) -> tuple[Any, Any]:
        import torch

        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        # Shaped (1, tokens, 1, head_dim): broadcast over heads in the (batch, tokens, heads, dim) layout.
        return ((emb.cos() * self.rope_scaling).to(self.dtype)[None, :, None],
                (emb.sin() * self.rope_scaling).to(self.dtype)[None, :, None])

    @staticmethod
    def _rotate(x, cos, sin):
        import torch

        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def forward(self, tokens: list[int], start: int):
        """Run `tokens` at positions start.. (the cache must hold exactly the `start` tokens before them); returns
        the logits of the last position as a (1, vocab) float32 tensor."""
        import torch

        with torch.inference_mode():
            return self._forward(tokens, start)

    def _forward(self, tokens: list[int], start: int):
        import torch
        import torch.nn.functional as F

        n = len(tokens)
        end = start + n
        if end > self.max_len:
            raise ValueError(f"{end} tokens do not fit the {self.max_len}-token cache")
        ids = torch.tensor([tokens], device=self.device)
        x = F.embedding(ids, self.embed)
        cos, sin = self._rope(torch.arange(start, end, device=self.device))
        if n == 1 or start == 0:
            mask, causal = None, n > 1
        else:  # a new chunk after cached tokens: each row sees the cache and the chunk up to itself
            mask = torch.ones(n, end, dtype=torch.bool, device=self.device).tril(start)
            causal = False
        qk_heads = self.heads + self.kv_heads
        for i, (norm1, qkv_proj, o_proj, norm2, gate_up_proj, down_proj) in enumerate(self.layers):
            h = _rms_norm(x, *norm1)
            qkv = qkv_proj.exact(h)
            # Queries and keys rotated together: one set of element-wise ops instead of two.
            qk = self._rotate(qkv[..., :self.q_size + self.kv_size].view(1, n, qk_heads, self.head_dim), cos, sin)
            q = qk[:, :, :self.heads].transpose(1, 2)
            self.k[i, 0, :, start:end] = qk[0, :, self.heads:].transpose(0, 1)
            self.v[i, 0, :, start:end] = qkv[0, :, self.q_size + self.kv_size:].view(n, self.kv_heads, self.head_dim).transpose(0, 1)
            att = F.scaled_dot_product_attention(q, self.k[i, :, :, :end], self.v[i, :, :, :end], attn_mask=mask,
                                                 is_causal=causal, scale=self.scaling,
                                                 enable_gqa=self.kv_heads != self.heads)
            x = x + o_proj.exact(att.transpose(1, 2).reshape(1, n, self.q_size))
            h = _rms_norm(x, *norm2)
            gate, up = gate_up_proj.exact(h).chunk(2, dim=-1)
            x = x + down_proj.exact(F.silu(gate) * up)
        last = _rms_norm(x[:, -1:], *self.norm)
        return self.lm_head.exact(last)[:, -1].float()

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
        import torch

        with torch.inference_mode():
            logits = self._one(token, len(self.ids)) if self.int8 else self._forward([token], len(self.ids))
        self.ids.append(token)
        return logits

    def _one(self, token: int, pos: int):
        """One token at `pos` in as few tensor operations as possible (int8 mode, whose numerics are not tied to
        transformers'): fused RMSNorm, attention as two small batched products over the grouped heads."""
        import torch
        import torch.nn.functional as F

        if pos >= self.max_len:
            raise ValueError(f"{pos + 1} tokens do not fit the {self.max_len}-token cache")
        end = pos + 1
        x = self.embed[token:token + 1]
        cos, sin = self._rope(torch.tensor([pos], device=self.device))
        cos, sin = cos[0, 0], sin[0, 0]  # (1, head_dim): broadcast over heads
        qk_heads, half, group = self.heads + self.kv_heads, self.head_dim // 2, self.heads // self.kv_heads
        for i, (norm1, qkv_proj, o_proj, norm2, gate_up_proj, down_proj) in enumerate(self.layers):
            qkv = qkv_proj(F.rms_norm(x, norm1[0].shape, norm1[0], norm1[1]))
            qk = qkv[0, :self.q_size + self.kv_size].view(qk_heads, self.head_dim)
            qk = qk * cos + torch.cat((-qk[:, half:], qk[:, :half]), dim=-1) * sin
            keys, values = self.k[i, 0], self.v[i, 0]
            keys[:, pos] = qk[self.heads:]
            values[:, pos] = qkv[0, self.q_size + self.kv_size:].view(self.kv_heads, self.head_dim)
            q = qk[:self.heads].view(self.kv_heads, group, self.head_dim)
            weights = torch.softmax(torch.bmm(q, keys[:, :end].transpose(1, 2)) * self.scaling, dim=-1)
            x = x + o_proj(torch.bmm(weights, values[:, :end]).view(1, self.q_size))
            gate, up = gate_up_proj(F.rms_norm(x, norm2[0].shape, norm2[0], norm2[1])).chunk(2, dim=-1)
            x = x + down_proj(F.silu(gate) * up)
        last = F.rms_norm(x, self.norm[0].shape, self.norm[0], self.norm[1])
        return self.lm_head(last).float()

    def generate(self, prompt: list[int], max_new_tokens: int, *, eos: set[int], temperature: float = 0.0,
                 top_p: float = 1.0, constraint: Any = None, should_stop: Callable[[], bool] = lambda: False
                 ) -> Iterator[int]:
        """Yield new token ids until EOS, `max_new_tokens`, `should_stop()`, or the constraint's end.

        A constraint (assistant.grammar.Constraint) masks the logits before each choice and is told each token.
        A tool call still open at the budget is closed rather than cut (half a call is worth nothing): closing
        tokens are preferred from then on, within as many tokens again at most."""
        import torch

        logits = self.prefill(prompt)
        produced = 0
        while True:
            if produced >= max_new_tokens:
                if constraint is None or produced >= 2 * max_new_tokens or not constraint.wants_more():
                    return
                if produced == max_new_tokens:
                    constraint.finish()
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
            produced += 1
            if should_stop() or (constraint is not None and constraint.done()):
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
