"""Causal self-attention for prompt prefill on CPU, registered as a transformers attention.

The scorers' cost is one prefill pass over a long prompt. On CPU, torch's flash-attention
kernel runs the small heads of the default model (head_dim 64, 3 key/value heads shared by 9
query heads) at a third of the matmul rate or less, and attention took half of a 2,200-token
pass (profiled in eval/bench_latency.py's notes in the README). This version computes causal
attention in query blocks with batched matmuls: the query heads that share a key/value head
are stacked into one matrix (grouped-query attention without copying keys and values), and
each block only multiplies the keys at or before it. Measured on 2 cores, bf16, one layer:
1.2-1.7x faster than the flash kernel from 420 to 2,230 tokens.

It is used only where it is exact: CPU, no gradient, no attention mask (unpadded prompts)
and queries that are the whole sequence (a prefill without cache), in bf16 (in fp32 the
flash kernel was as fast).

A second case is the pointwise strategy's packed suffixes: many short suffixes in one row
after a cached prefix, each attending to the prefix and to itself only. The caller passes
the exact 4D mask (so any attention implementation is correct) and declares the layout with
``packed_suffixes``; here the prefix part is one matmul for all suffixes and each suffix's
own part a small causal block, instead of a masked pass over the whole (suffixes x
prefix + suffixes) square, which took a third of a pointwise request.

Everything else (padded batches, decoding, training) goes to transformers' own SDPA.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

NAME = "llm_rec_cpu_blocked"
BLOCK = 128  # query rows per block: 128 was fastest from 100 to 2,230 tokens (64 and 256 measured)
_registered = False
# (prefix length, suffix lengths) of the forward pass running in this context, if packed
_packed: contextvars.ContextVar[tuple[int, tuple[int, ...]] | None] = contextvars.ContextVar("packed", default=None)


@contextlib.contextmanager
def packed_suffixes(prefix_len: int, lengths: Sequence[int]) -> Iterator[None]:
    """Declare that the forward pass inside is ``lengths`` suffixes packed after a cached prefix."""
    token = _packed.set((prefix_len, tuple(lengths)))
    try:
        yield
    finally:
        _packed.reset(token)


def blocked_causal_attention(query: Any, key: Any, value: Any, scale: float, block: int = BLOCK) -> Any:
    """Causal attention of ``query`` [B, H, T, D] over ``key``/``value`` [B, KV, T, D], H = G*KV.

    Returns [B, T, H, D] (the layout transformers' attention functions return).
    """
    import torch

    b, h, t, d = query.shape
    kv = key.shape[1]
    g = h // kv
    q = (query * scale).reshape(b * kv, g, t, d)
    kt = key.reshape(b * kv, t, d).transpose(-1, -2)
    v = value.reshape(b * kv, t, d)
    out = torch.empty(b * kv, g, t, d, dtype=query.dtype, device=query.device)
    future = torch.ones(block, block, dtype=torch.bool, device=query.device).triu(1)
    for s in range(0, t, block):
        e = min(t, s + block)
        n = e - s
        scores = torch.bmm(q[:, :, s:e].reshape(b * kv, g * n, d), kt[..., :e]).view(b * kv, g, n, e)
        scores[..., s:e].masked_fill_(future[:n, :n], float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(b * kv, g * n, e)
        out[:, :, s:e] = torch.bmm(probs, v[:, :e]).view(b * kv, g, n, d)
    return out.view(b, h, t, d).transpose(1, 2).contiguous()


def packed_suffix_attention(query: Any, key: Any, value: Any, scale: float, prefix_len: int,
                            lengths: Sequence[int]) -> Any:
    """Attention of packed suffixes (``query`` [B, H, S, D]) over ``key``/``value`` [B, KV, P+S, D]:
    every suffix sees the P prefix positions and causally itself. Returns [B, S, H, D]."""
    import torch

    b, h, s, d = query.shape
    kv = key.shape[1]
    g = h // kv
    p = prefix_len
    q = (query * scale).reshape(b * kv, g, s, d)
    k = key.reshape(b * kv, p + s, d)
    v = value.reshape(b * kv, p + s, d)
    on_prefix = torch.bmm(q.reshape(b * kv, g * s, d), k[:, :p].transpose(-1, -2)).view(b * kv, g, s, p)
    out = torch.empty(b * kv, g, s, d, dtype=query.dtype, device=query.device)
    start = 0
    for n in lengths:
        end = start + n
        own = torch.matmul(q[:, :, start:end], k[:, None, p + start : p + end].transpose(-1, -2))
        own.masked_fill_(torch.ones(n, n, dtype=torch.bool, device=query.device).triu(1), float("-inf"))
        probs = torch.softmax(torch.cat([on_prefix[:, :, start:end], own], dim=-1), dim=-1)
        out[:, :, start:end] = (torch.matmul(probs[..., :p], v[:, None, :p])
                                + torch.matmul(probs[..., p:], v[:, None, p + start : p + end]))
        start = end
    return out.view(b, h, s, d).transpose(1, 2).contiguous()


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers attention interface: the blocked kernel where exact, else transformers' SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (
        causal
        and dropout == 0.0
        and kwargs.get("position_bias") is None
        and query.device.type == "cpu"
        and not query.requires_grad
        and query.shape[1] % key.shape[1] == 0
    )
    packed = _packed.get()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if plain and packed is not None and key.shape[2] == packed[0] + query.shape[2] == packed[0] + sum(packed[1]):
        return packed_suffix_attention(query, key, value, scale, *packed), None
    prefill = attention_mask is None and query.shape[2] == key.shape[2] > 1 and query.dtype == torch.bfloat16
    if not (plain and prefill):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    return blocked_causal_attention(query, key, value, scale), None


def register() -> str:
    """Register the attention (and SDPA's mask builder under its name) once; return its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, attention_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME
