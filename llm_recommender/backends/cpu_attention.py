"""Causal self-attention for prompt prefill on CPU, registered as a transformers attention.

The scorers' cost is one prefill pass over a long prompt. On CPU, torch's flash-attention
kernel runs the small heads of the default model (head_dim 64, 3 key/value heads shared by 9
query heads) at a third of the matmul rate or less, and attention took half of a 2,200-token
pass (profiled in docs/benchmarks.md). This version computes causal
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
``on_cache``; here each suffix is one causal problem over the prefix's keys and its
own, computed in cache-sized blocks of rows, instead of a masked pass over the whole
(suffixes x prefix + suffixes) rectangle, which took a third of a pointwise request.

Everything else (padded batches, decoding, training) goes to transformers' own SDPA.

Which kernel is faster depends on the CPU (:func:`choose`). The numbers above are from an
AMD EPYC with AVX512-BF16 and no AMX. On an Intel Xeon with AMX, torch's flash kernel runs its
bf16 matmuls on the AMX tiles and wins instead (2 threads, bf16, default model: a 2,200-token
pass 0.96 s against 1.45 s blocked; a verbalizer request 0.77 s against 1.38 s; a pointwise one
1.18 s against 1.82 s), so there ``auto`` keeps transformers' SDPA. (A split of passes on a KV
cache into a cache part and a new tokens' part, merged by log-sum-exp, ran there too; it gained
2-3% per request end to end and was removed.)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

NAME = "llm_rec_cpu_blocked"
BLOCK = 128  # query rows per block: 128 was fastest from 100 to 2,230 tokens (64 and 256 measured)
_registered = False


@dataclass
class OnCache:
    """The layout of a pass of new tokens on a KV cache (:func:`on_cache`)."""

    visible: int  # every new token sees the cache's first ``visible`` positions, none after them
    sees: Any  # bool [T, T]: new token i sees new token j
    lengths: tuple[int, ...] | None  # the new tokens are these suffixes, each causal, seeing no other


_on_cache: contextvars.ContextVar[OnCache | None] = contextvars.ContextVar("on_cache", default=None)


@contextlib.contextmanager
def on_cache(visible: int, sees: Any, lengths: Sequence[int] | None = None) -> Iterator[None]:
    """Declare the layout of the forward pass inside: new tokens on a KV cache, each seeing its
    first ``visible`` positions and the new tokens ``sees`` gives (``lengths``: packed causal suffixes).
    The caller still passes the exact 4D mask, so any attention is correct; the blocked kernel runs faster."""
    token = _on_cache.set(OnCache(visible, sees, None if lengths is None else tuple(lengths)))
    try:
        yield
    finally:
        _on_cache.reset(token)


def blocked_causal_attention(query: Any, key: Any, value: Any, scale: float, block: int = BLOCK, offset: int = 0) -> Any:
    """Causal attention of ``query`` [B, H, T, D] over ``key``/``value`` [B, KV, offset+T, D], H = G*KV:
    query row i sees keys ``0 .. offset + i`` (``offset``: cached positions before the queries).

    Returns [B, T, H, D] (the layout transformers' attention functions return).
    """
    import torch

    b, h, t, d = query.shape
    kv = key.shape[1]
    g = h // kv
    q = (query * scale).reshape(b * kv, g, t, d)
    kt = key.reshape(b * kv, offset + t, d).transpose(-1, -2)
    v = value.reshape(b * kv, offset + t, d)
    out = torch.empty(b * kv, g, t, d, dtype=query.dtype, device=query.device)
    future = torch.ones(block, block, dtype=torch.bool, device=query.device).triu(1)
    for s in range(0, t, block):
        e = min(t, s + block)
        n = e - s
        # a block of rows: small enough that its scores stay in cache through softmax and PV
        scores = torch.bmm(q[:, :, s:e].reshape(b * kv, g * n, d), kt[..., : offset + e]).view(b * kv, g, n, offset + e)
        scores[..., offset + s : offset + e].masked_fill_(future[:n, :n], float("-inf"))
        probs = torch.softmax(scores, dim=-1).view(b * kv, g * n, offset + e)
        out[:, :, s:e] = torch.bmm(probs, v[:, : offset + e]).view(b * kv, g, n, d)
    return out.view(b, h, t, d).transpose(1, 2).contiguous()


def packed_suffix_attention(query: Any, key: Any, value: Any, scale: float, prefix_len: int,
                            lengths: Sequence[int]) -> Any:
    """Attention of packed suffixes (``query`` [B, H, S, D]) over ``key``/``value`` [B, KV, P+S, D]:
    every suffix sees the P prefix positions and causally itself. Returns [B, S, H, D]."""
    import torch

    p = prefix_len
    parts = []
    start = 0
    for n in lengths:
        end = start + n
        # this suffix's keys: the prefix's, then its own (a small copy), so it is one causal problem
        k = torch.cat([key[:, :, :p], key[:, :, p + start : p + end]], dim=2)
        v = torch.cat([value[:, :, :p], value[:, :, p + start : p + end]], dim=2)
        parts.append(blocked_causal_attention(query[:, :, start:end], k, v, scale, offset=p))
        start = end
    return torch.cat(parts, dim=1)


def attention_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None,
                      **kwargs: Any) -> tuple[Any, None]:
    """transformers attention interface (``NAME``): causal prefill and packed suffixes in query blocks
    where they apply, else transformers' SDPA."""
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
    layout = _on_cache.get()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    t = query.shape[2]
    if (plain and layout is not None and layout.lengths is not None and tuple(layout.sees.shape) == (t, t)
            and key.shape[2] == layout.visible + t):
        return packed_suffix_attention(query, key, value, scale, layout.visible, layout.lengths), None
    prefill = attention_mask is None and t == key.shape[2] > 1 and query.dtype == torch.bfloat16
    if not (plain and prefill):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    return blocked_causal_attention(query, key, value, scale), None


def choose(setting: str = "auto") -> tuple[str, str]:
    """The attention implementation for a CPU model, and why: torch's SDPA on CPUs with AMX, this
    module's blocked kernel elsewhere (``setting`` 'blocked' forces the blocked kernel, 'sdpa' torch's SDPA)."""
    from .kit import cpu_has_amx

    if setting == "sdpa":
        return "sdpa", "cpu_attention='sdpa'"
    if setting == "blocked":
        return register(), "cpu_attention='blocked'"
    if cpu_has_amx():
        return "sdpa", "AMX CPU: torch's flash kernel runs on the AMX tiles and is faster than the blocked kernel"
    return register(), "no AMX: the blocked kernel is faster than torch's flash kernel for the small heads"


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
