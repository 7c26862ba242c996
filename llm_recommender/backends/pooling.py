"""Pooled hidden states of a causal LM: what item representations (h_i) are made of.

The transformers backend runs :func:`pooled_hidden_states` for ``Backend.hidden_states``; the
item encoder (:mod:`llm_recommender.scorers.learned.encoder`) calls the backend, or these
functions directly on a loaded model. torch is imported inside the functions: it is optional for
the package (the ``torch`` extra), and these run only where a model is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from .kit import padded_batch

Pooling = Literal["mean", "last"]


def model_identity(model: Any) -> dict[str, Any]:
    """What item vectors depend on: layer count, width, config, dtype and a sample of the weights
    (two fine-tunes of one architecture share name and config, so a few weights are hashed too)."""
    import torch  # optional: see the module docstring

    cfg = {k: v for k, v in model.config.to_dict().items()
           if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    h = hashlib.sha256()
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            if i % 7 == 0:
                h.update(name.encode())
                h.update(p.detach().float().flatten()[:64].cpu().numpy().tobytes())
    return {"num_layers": int(model.config.num_hidden_layers), "hidden_size": int(model.config.hidden_size),
            "config": cfg, "dtype": str(next(model.parameters()).dtype), "weights": h.hexdigest()[:16]}


def resolve_layer(model: Any, layer: int | None) -> int:
    """``None`` -> the middle layer (``n // 2 + 1`` of ``n``); negatives count from the top.

    ``model`` is the layer count ``n`` or a model with ``config.num_hidden_layers``."""
    n = int(model) if isinstance(model, int) else int(model.config.num_hidden_layers)
    if layer is None:
        return min(n, n // 2 + 1)
    if not -(n + 1) <= layer <= n:
        raise ValueError(f"layer {layer} out of range for a model with {n} layers (0..{n}, or negative)")
    return layer if layer >= 0 else n + 1 + layer


def pooled_hidden_states(
    model: Any, tokenizer: Any, texts: list[str], *, layers: Sequence[int], pooling: Pooling
) -> list[np.ndarray]:
    """For each layer in ``layers``, an ``(len(texts), hidden)`` float32 array of pooled states."""
    import torch  # optional: see the module docstring

    # The text as the tokenizer encodes it alone, special tokens included: <bos> where the model's tokenizer adds
    # one (Llama, Gemma: Gemma 3 reads text badly without it), nothing for SmolLM2's.
    enc = [tokenizer(t)["input_ids"] or [tokenizer.eos_token_id] for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    ids, mask = padded_batch(enc, pad, side="right")  # right padding: positions start at 0 for every row
    body = getattr(model, "base_model", model)  # the decoder without the LM head: its logits are not needed
    with torch.inference_mode():
        states = _hidden_states_up_to(body, ids.to(device), mask.to(device), max(layers))
    m = mask.to(device).unsqueeze(-1).float()
    lengths = torch.tensor([len(e) for e in enc], device=device)
    result = []
    for layer in layers:
        h = states[layer].float()
        v = (h * m).sum(1) / m.sum(1) if pooling == "mean" else h[torch.arange(len(enc), device=device), lengths - 1]
        result.append(v.cpu().numpy().astype(np.float32))
    return result


class _Enough(Exception):
    """Raised by a forward hook once the deepest layer asked for has run."""


def _hidden_states_up_to(body: Any, ids: Any, mask: Any, deepest: int) -> dict[int, Any]:
    """Hidden states 0..``deepest`` (0: the embeddings; k: after k decoder layers), running no layer above
    ``deepest``: item vectors read the middle layer by default, so this halves their cost. The top layer
    (``deepest`` = the layer count) is the model's own last hidden state, its final norm applied, so that case
    runs the whole model."""
    blocks = getattr(body, "layers", None)
    n = getattr(body.config, "num_hidden_layers", None)
    if blocks is None or n is None or deepest >= n:  # an architecture without a ``layers`` list, or the top layer
        out = body(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        return dict(enumerate(out.hidden_states))
    captured: dict[int, Any] = {}

    def keep(k: int):
        def hook(_module: Any, _args: Any, output: Any) -> None:
            captured[k] = output[0] if isinstance(output, tuple) else output
            if k == deepest:
                raise _Enough

        return hook

    handles = [blocks[k - 1].register_forward_hook(keep(k)) for k in range(1, deepest + 1)]
    handles.append(body.get_input_embeddings().register_forward_hook(keep(0)))
    try:
        body(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Enough:
        pass
    finally:
        for h in handles:
            h.remove()
    return captured
