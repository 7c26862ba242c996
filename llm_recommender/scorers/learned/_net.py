"""The torch modules of the sequence model: item representations h_i and a causal encoder for h_u.

Index convention inside the network: item ``k`` of the catalogue is row ``k + 1`` of the
ID tables; row 0 is both padding and "unseen item", and is kept at zero (``padding_idx``),
so an unseen item's h_i is its text part alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ItemTower(nn.Module):
    """h_i = ID embedding (known items) + LayerNorm(Linear(standardized text vector))."""

    text_mean: torch.Tensor  # buffers (with text), declared for the type checker
    text_std: torch.Tensor

    def __init__(self, n_items: int, dim: int, text_dim: int, *, use_id: bool, use_text: bool, item_bias: bool):
        super().__init__()
        self.use_id, self.use_text = use_id, use_text
        self.id_emb = nn.Embedding(n_items + 1, dim, padding_idx=0) if use_id else None
        self.bias = nn.Embedding(n_items + 1, 1, padding_idx=0) if item_bias else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=dim**-0.5)
            with torch.no_grad():
                self.id_emb.weight[0].zero_()
        if self.bias is not None:
            nn.init.zeros_(self.bias.weight)
        if use_text:
            self.text_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
            # Start the text part at the ID part's scale (norm about 1), so neither swamps the other.
            nn.init.constant_(self.text_proj[1].weight, dim**-0.5)  # pyright: ignore[reportArgumentType]  (a LayerNorm's weight)
            # Standardization statistics of the known items' vectors, saved with the weights.
            self.register_buffer("text_mean", torch.zeros(text_dim))
            self.register_buffer("text_std", torch.ones(text_dim))
        else:
            self.text_proj = None

    def forward(self, ids: torch.Tensor, vectors: torch.Tensor | None, id_keep: torch.Tensor | None = None):
        """``ids``: shifted indices (0 = pad/unseen), any shape S; ``vectors``: S x text_dim or None.
        ``id_keep`` (training only): a 0/1 factor per catalogue row (ID dropout). Returns (S x dim, S)."""
        parts = []
        if self.id_emb is not None:
            e = self.id_emb(ids)
            if id_keep is not None:
                e = e * id_keep[ids].unsqueeze(-1)
            parts.append(e)
        if self.text_proj is not None:
            assert vectors is not None
            parts.append(self.text_proj((vectors - self.text_mean) / self.text_std))
        h = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        b = self.bias(ids).squeeze(-1) if self.bias is not None else torch.zeros(ids.shape, device=ids.device)
        return h, b


class Block(nn.Module):
    """Pre-norm transformer block; ``mask`` is a boolean (B, 1, L, L) "may attend" mask."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.ff(self.ln2(x)))


class SequenceEncoder(nn.Module):
    """SASRec-style causal self-attention over left-padded histories of item representations."""

    def __init__(self, dim: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.dim = dim
        self.pos = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``h``: (B, L, dim) item representations, ``valid``: (B, L) bool, False on padding.
        Returns (B, L, dim): at each position, the user state after the items up to it."""
        L = h.shape[1]
        x = h * math.sqrt(self.dim) + self.pos.weight[-L:]  # the newest item always has the last position
        x = self.drop(x * valid.unsqueeze(-1))
        causal = torch.ones(L, L, dtype=torch.bool, device=h.device).tril()
        # Real positions see only real earlier keys; a padding query sees itself, so no row is all-masked (NaN).
        mask = (causal & valid[:, None, :]) | torch.eye(L, dtype=torch.bool, device=h.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)


class SequenceNet(nn.Module):
    item_vectors: torch.Tensor  # a buffer, declared for the type checker

    def __init__(self, n_items: int, text_dim: int, cfg) -> None:  # cfg: SequenceModelConfig
        super().__init__()
        self.items = ItemTower(
            n_items, cfg.dim, text_dim, use_id=cfg.use_id_embedding, use_text=cfg.use_text, item_bias=cfg.item_bias
        )
        self.encoder = SequenceEncoder(cfg.dim, cfg.layers, cfg.heads, cfg.max_len, cfg.dropout)
        self.register_buffer("item_vectors", torch.zeros(n_items + 1, text_dim if cfg.use_text else 0))
