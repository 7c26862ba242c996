"""Soft item tokens (LLaRA / A-LLMRec): one prompt position per item whose input embedding is
``proj(e_i)``, ``e_i`` the item's vector from a collaborative model fitted on the training sequences.

The table ``e`` is fitted ONCE, on the fit's training sequences, and saved with the component:
training and serving read the same basis, so the learned projection means the same thing in
both. ``proj`` is a 2-layer MLP (e_dim -> LLM hidden size) trained with the ranker; items with no
row in the table (never seen in training, or unknown to the collaborative model) enter as the
average item plus one learned "unknown item" vector; their CF score (below) still goes through.

A prompt marks each slot with :data:`SLOT` (a control character, which untrusted item text can
never carry: ``prompts.quote_untrusted`` strips control characters). :func:`encode` tokenizes the
text between the slots and puts one placeholder id at each slot; :func:`last_logits` embeds the
ids, replaces the placeholder rows with the items' projected vectors and runs the model on
``inputs_embeds``. Training and scoring both go through these two functions.

``cf_scores`` (LlamaRec's retriever signal, as a vector): each candidate slot's input also carries the
item model's score for this history, z-scored over the pass's candidates, so the LLM can read the
collaborative ranking beside each item. Then the item model is fitted on the training sequences less
each user's last ``tail`` items (the examples' targets): at training time it has never seen the item an
example asks for, as at serving time, and the same model serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch  # the [torch] extra: imported by the ranker only when item tokens are on
from torch import nn

from ..errors import BundleError
from ..scorers.component import TrainingData
from ..scorers.item_space import ItemSpace
from .component import ItemTokenSource
from .scorer import SLOT

# in a subfolder of the model folder: vLLM loads every top-level *.safetensors there as model weights
TOKENS_FILE = "item_tokens/item_tokens.safetensors"


def fit_item_model(source: ItemTokenSource, space: ItemSpace, data: TrainingData,
                   config: dict[str, Any] | None = None) -> Any:
    """The collaborative component (``sequence`` or ``als``) behind the item tokens, fitted on ``data``."""
    from ..scorers import scorer_class

    if source == "none":
        raise ValueError("no item model for item_tokens='none'")
    cls: Any = scorer_class(source, param="components.llm_ranker.item_tokens")  # a Component: (space, config)
    return cls(space, config).fit(TrainingData(space, data.sequences, seed=data.seed))


def fit_item_table(source: ItemTokenSource, space: ItemSpace, data: TrainingData,
                   config: dict[str, Any] | None = None, comp: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(table, known)``: one row per catalogue item from ``source`` fitted on ``data`` (or the fitted
    ``comp``), and which rows carry a trained vector (items in the training sequences that it has a vector for)."""
    seen = np.zeros(len(space), dtype=bool)
    for seq in data.sequences:
        seen[np.asarray(seq, dtype=np.int64)] = True
    comp = comp if comp is not None else fit_item_model(source, space, data, config)
    if source == "als":
        model = comp.model
        factors = np.asarray(model.item_factors, dtype=np.float32)
        index = model._item_index  # item id -> factor row (items of the training interactions)
        table = np.zeros((len(space), factors.shape[1]), dtype=np.float32)
        known = np.zeros(len(space), dtype=bool)
        for r, item in enumerate(space.items):
            j = index.get(item.id)
            if j is not None:
                table[r], known[r] = factors[j], True
        return table, known & seen
    net = comp.model.net
    ids = torch.arange(1, len(space) + 1)
    with torch.no_grad():
        vectors = net.item_vectors[1:] if net.items.use_text else None
        h, _ = net.items(ids, vectors)
    return h.float().numpy().astype(np.float32), seen


class ItemTokens(nn.Module):
    """The item table (a frozen buffer), which of its rows are known, the projection and the unknown vector."""

    table: torch.Tensor
    known: torch.Tensor

    def __init__(self, table: np.ndarray, known: np.ndarray, hidden: int, seed: int = 0, score_dim: int = 0,
                 label_init: np.ndarray | None = None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.score_dim = score_dim  # 1: each slot's input also carries its item-model score (0 for history slots)
        e_dim = table.shape[1]
        t = torch.as_tensor(np.asarray(table, dtype=np.float32))
        k = torch.as_tensor(np.asarray(known, dtype=bool))
        # standardised on the known rows, so the projection starts at the same scale whatever the model's
        mean = t[k].mean(0) if k.any() else torch.zeros(e_dim)
        std = t[k].std(0).clamp(min=1e-6) if int(k.sum()) > 1 else torch.ones(e_dim)
        self.register_buffer("table", ((t - mean) / std).contiguous())
        self.register_buffer("known", k)
        first, second = nn.Linear(e_dim + score_dim, hidden), nn.Linear(hidden, hidden)
        self.proj = nn.Sequential(first, nn.GELU(), second)
        # seeded; the output starts small (the soft tokens near zero) so the untrained slots barely move the LLM
        for layer, scale in ((first, 1.0), (second, 0.02)):
            with torch.no_grad():
                layer.weight.normal_(0.0, scale * layer.in_features ** -0.5, generator=gen)
                layer.bias.zero_()
        self.unknown = nn.Parameter(torch.randn(hidden, generator=gen) * 0.02)
        # slot_labels: each candidate slot also carries its label's vector (started from the LLM's own embedding
        # of that letter), so "which label goes with the best slot" is one attention hop, not two
        self.labels = (nn.Parameter(torch.as_tensor(np.asarray(label_init, dtype=np.float32)).clone())
                       if label_init is not None else None)

    @property
    def hidden(self) -> int:
        return int(self.unknown.shape[0])

    def forward(self, rows: torch.Tensor, scores: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """``rows``: catalogue rows (-1: not in the catalogue) -> (len(rows), hidden); ``scores``: one
        item-model score per row when the module was built with ``score_dim=1``. An item with no vector (not
        in the catalogue, or unknown to the item model) enters as the average item plus the learned unknown
        vector; its score still goes through (a cold item's score comes from the item model's text path)."""
        safe = rows.clamp(min=0)
        known = ((rows >= 0) & self.known[safe]).unsqueeze(-1)
        x = torch.where(known, self.table[safe], torch.zeros((), dtype=self.table.dtype, device=rows.device))
        if self.score_dim:
            s = scores if scores is not None else torch.zeros(len(rows), device=x.device)
            x = torch.cat([x, s.to(x.dtype).reshape(-1, 1)], dim=1)
        out = self.proj(x)
        out = out + torch.where(known, torch.zeros((), dtype=out.dtype, device=out.device),
                                self.unknown.to(out.dtype))
        if self.labels is not None and labels is not None:  # -1: a history slot, no label
            has = (labels >= 0).unsqueeze(-1)
            out = out + torch.where(has, self.labels[labels.clamp(min=0)].to(out.dtype), torch.zeros_like(out))
        return out

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tensors["known"] = tensors["known"].to(torch.uint8)
        save_file(tensors, str(path), metadata={"format": "llm_ranker item tokens",
                                                "shape": json.dumps([int(self.table.shape[1]), self.hidden])})

    @classmethod
    def load(cls, path: Path) -> ItemTokens:
        from safetensors.torch import load_file

        if not path.is_file():
            raise BundleError(f"{path} is missing: the ranker was trained with item tokens", param="components")
        tensors = load_file(str(path))
        score_dim = int(tensors["proj.0.weight"].shape[1] - tensors["table"].shape[1])
        labels = tensors["labels"].numpy() if "labels" in tensors else None
        module = cls(tensors["table"].numpy(), tensors["known"].numpy().astype(bool),
                     int(tensors["unknown"].shape[0]), score_dim=score_dim, label_init=labels)
        tensors["known"] = tensors["known"].to(torch.bool)
        module.load_state_dict(tensors)
        return module.eval()



def encode(tokenizer: Any, text: str, rows: list[int], placeholder: int) -> tuple[list[int], list[int]]:
    """``(ids, slot positions)`` of ``text`` whose :data:`SLOT` marks are the items ``rows``, in order."""
    parts = text.split(SLOT)
    if len(parts) - 1 != len(rows):
        raise ValueError(f"{len(parts) - 1} item slots in the prompt for {len(rows)} items")
    ids: list[int] = []
    slots: list[int] = []
    for k, part in enumerate(parts):
        if part:
            ids += list(tokenizer(part, add_special_tokens=False)["input_ids"])
        if k < len(rows):
            slots.append(len(ids))
            ids.append(placeholder)
    return ids, slots


def last_logits(model: Any, tokens: ItemTokens, batch: list[Any], pad_id: int, device: Any) -> torch.Tensor:
    """Last-position logits of each prompt ``(ids, slot positions, slot rows[, slot scores[, slot label
    indices]])``, one padded pass (left padding)."""
    x, padding = _embedded(model, tokens, batch, pad_id, device)
    return model(inputs_embeds=x, **padding, use_cache=False, logits_to_keep=1).logits[:, -1, :]


def slot_logprobs(model: Any, tokens: ItemTokens, batch: list[Any], pad_id: int, device: Any,
                  n_read: list[int], token_ids: list[int]) -> list[torch.Tensor]:
    """The slot readout: for each prompt, the next-token log-probabilities of ``token_ids`` right after each of
    its last ``n_read[r]`` slots (the candidates'), ``(n_read[r], len(token_ids))``; one padded pass. The same
    numbers as the backends' ``embeds_logprobs_at`` at serving time."""
    x, padding = _embedded(model, tokens, batch, pad_id, device)
    hidden = model.get_decoder()(inputs_embeds=x, **padding, use_cache=False).last_hidden_state
    width = x.shape[1]
    read = [b[1][len(b[1]) - n:] for b, n in zip(batch, n_read)]  # the candidates' slot positions, unpadded
    rows = torch.tensor([r for r, ks in enumerate(read) for _ in ks], dtype=torch.long, device=device)
    cols = torch.tensor([width - len(b[0]) + k for b, ks in zip(batch, read) for k in ks], dtype=torch.long,
                        device=device)
    logits = model.get_output_embeddings()(hidden[rows, cols]).float()
    lp = torch.log_softmax(logits, dim=-1)[:, list(token_ids)]
    return list(lp.split(list(n_read)))


def _embedded(model: Any, tokens: ItemTokens, batch: list[Any], pad_id: int,
              device: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Input embeddings of the left-padded batch with the slots' projected item vectors, and the model's
    padding arguments (attention mask and positions; none when no row is padded)."""
    from ..backends.kit import mask_positions, padded_batch

    ids, mask = padded_batch([b[0] for b in batch], pad_id)
    embed = model.get_input_embeddings()
    x = embed(ids.to(device)).clone()
    width = ids.shape[1]
    bi = torch.tensor([r for r, b in enumerate(batch) for _ in b[1]], dtype=torch.long, device=device)
    pi = torch.tensor([width - len(b[0]) + p for b in batch for p in b[1]], dtype=torch.long, device=device)
    rows = torch.tensor([row for b in batch for row in b[2]], dtype=torch.long, device=device)
    scores = (torch.tensor([v for b in batch for v in b[3]], dtype=torch.float32, device=device)
              if all(len(b) > 3 for b in batch) else None)
    labels = (torch.tensor([v for b in batch for v in b[4]], dtype=torch.long, device=device)
              if all(len(b) > 4 for b in batch) else None)
    if len(rows):
        x[bi, pi] = tokens(rows, scores, labels).to(x.dtype)
    if not bool((mask == 0).any()):
        return x, {"attention_mask": None, "position_ids": None}
    return x, {"attention_mask": mask.to(device), "position_ids": mask_positions(mask).to(device)}


def label_vectors(model: Any, tokenizer: Any, n: int) -> np.ndarray:
    """The LLM's input embeddings of the first ``n`` labels ``A``, ``B``, ... (single tokens, as the
    verbalizer's): where the slot_labels vectors start."""
    from ..scorers.llm.verbalizer import LABEL_ALPHABET

    ids = [tokenizer(letter, add_special_tokens=False)["input_ids"] for letter in LABEL_ALPHABET[:n]]
    if any(len(i) != 1 for i in ids):
        raise ValueError("the tokenizer has no single-token labels for slot_labels")
    with torch.no_grad():
        return model.get_input_embeddings().weight[[i[0] for i in ids]].float().cpu().numpy()
