"""The per-token layer stacks of the lean loop, compiled with TorchScript (torch.jit.script) when first needed.

Why TorchScript: for a small model on a CPU the time per token goes mostly to issuing ~1,000 small tensor
operations, not to arithmetic; run from the TorchScript interpreter instead of Python the same operations took
about half the time (16 vs 30 ms per token for the 135M model, int8). The operations are the same ones, so the
numbers are the same (tests/test_decoder.py). torch.compile was tried too: 42 s to compile here, then slower.
"""

from __future__ import annotations

import warnings
from typing import Any, List, Optional  # noqa: F401 - TorchScript reads the annotations

import torch
import torch.nn.functional as F

_COMPILED: dict[str, Any] = {}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' RMSNorm, op for op (torch's fused rms_norm rounds differently)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def float_layers(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int, mask: Optional[torch.Tensor],
                 causal: bool, k: torch.Tensor, v: torch.Tensor, n1: List[torch.Tensor], n2: List[torch.Tensor],
                 eps: float, qkv_w: List[torch.Tensor], qkv_b: List[Optional[torch.Tensor]], o_w: List[torch.Tensor],
                 o_b: List[Optional[torch.Tensor]], gu_w: List[torch.Tensor], gu_b: List[Optional[torch.Tensor]],
                 dn_w: List[torch.Tensor], dn_b: List[Optional[torch.Tensor]], heads: int, kv_heads: int, hd: int,
                 scaling: float) -> torch.Tensor:
    """All layers for `x` (1, n, hidden) at positions start..start+n, writing keys and values into k and v
    (layers, 1, kv_heads, max_len, head_dim); float weights, transformers' arithmetic."""
    n = x.shape[1]
    end = start + n
    q_size = heads * hd
    kv_size = kv_heads * hd
    for i in range(len(qkv_w)):
        qkv = F.linear(rms_norm(x, n1[i], eps), qkv_w[i], qkv_b[i])
        # Queries and keys rotated together: one set of element-wise operations instead of two.
        qk = rotate(qkv[:, :, :q_size + kv_size].reshape(1, n, heads + kv_heads, hd), cos, sin)
        k[i, 0, :, start:end] = qk[0, :, heads:].transpose(0, 1)
        v[i, 0, :, start:end] = qkv[0, :, q_size + kv_size:].reshape(n, kv_heads, hd).transpose(0, 1)
        att = F.scaled_dot_product_attention(qk[:, :, :heads].transpose(1, 2), k[i, :, :, :end], v[i, :, :, :end],
                                             attn_mask=mask, dropout_p=0.0, is_causal=causal, scale=scaling,
                                             enable_gqa=kv_heads != heads)
        x = x + F.linear(att.transpose(1, 2).reshape(1, n, q_size), o_w[i], o_b[i])
        gate, up = F.linear(rms_norm(x, n2[i], eps), gu_w[i], gu_b[i]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, dn_w[i], dn_b[i])
    return x


def int8_layers(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, pos: int, k: torch.Tensor, v: torch.Tensor,
                n1: List[torch.Tensor], n2: List[torch.Tensor], eps: float,
                qkv: List[torch.classes.quantized.LinearPackedParamsBase],
                o: List[torch.classes.quantized.LinearPackedParamsBase],
                gu: List[torch.classes.quantized.LinearPackedParamsBase],
                dn: List[torch.classes.quantized.LinearPackedParamsBase],
                heads: int, kv_heads: int, hd: int, scaling: float) -> torch.Tensor:
    """All layers for one token `x` (1, hidden) at `pos`, with int8 weights (fbgemm's dynamic int8 kernels):
    fused RMSNorm, and attention as two batched products over the grouped heads."""
    q_size = heads * hd
    kv_size = kv_heads * hd
    group = heads // kv_heads
    end = pos + 1
    for i in range(len(qkv)):
        t = torch.ops.quantized.linear_dynamic(torch.rms_norm(x, [x.shape[-1]], n1[i], eps), qkv[i], True)
        qk = rotate(t[0, :q_size + kv_size].view(heads + kv_heads, hd), cos, sin)
        keys = k[i, 0]
        values = v[i, 0]
        keys[:, pos] = qk[heads:]
        values[:, pos] = t[0, q_size + kv_size:].view(kv_heads, hd)
        q = qk[:heads].view(kv_heads, group, hd)
        weights = torch.softmax(torch.bmm(q, keys[:, :end].transpose(1, 2)) * scaling, dim=-1)
        x = x + torch.ops.quantized.linear_dynamic(torch.bmm(weights, values[:, :end]).view(1, q_size), o[i], True)
        g = torch.ops.quantized.linear_dynamic(torch.rms_norm(x, [x.shape[-1]], n2[i], eps), gu[i], True)
        gate, up = g.chunk(2, dim=-1)
        x = x + torch.ops.quantized.linear_dynamic(F.silu(gate) * up, dn[i], True)
    return x


def compiled(name: str) -> Any:
    """The TorchScript version of float_layers or int8_layers (compiled once per process, about a second)."""
    if name not in _COMPILED:
        with warnings.catch_warnings():  # "torch.jit.script is deprecated": measured faster here (module doc)
            warnings.simplefilter("ignore", DeprecationWarning)
            _COMPILED[name] = torch.jit.script({"float": float_layers, "int8": int8_layers}[name])
    return _COMPILED[name]
