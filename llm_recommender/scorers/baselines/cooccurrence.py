"""Item-to-item co-occurrence: items consumed by the same users go together.

Fitted on the training split only: ``C[h, c]`` counts the distinct users who consumed both
``h`` and ``c``. A candidate scores the recency-weighted mean over the known history items of
``C[h, c] / sqrt(n_h n_c)`` (``cosine``, in [0, 1], so blockbusters do not win on count alone)
or of the raw count (``count``).

On a large catalogue each item keeps only its ``max_neighbours`` strongest co-occurrences (by the
normalised value it scores with), computed a block of items at a time: the whole matrix of a
37,060-item, 9.7M-interaction catalogue did not fit in 23 GB (docs/fit-at-scale.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from scipy import sparse

from ...configurable import ComponentConfig
from ...protocol import RankRequest
from ..component import Component, TrainingData
from ..item_space import LARGE_CATALOGUE_ITEMS

LARGE_CATALOGUE_NEIGHBOURS = 1_000  # co-occurrences kept per item above LARGE_CATALOGUE_ITEMS
BLOCK_ITEMS = 512  # rows of the co-occurrence matrix computed at once when it is pruned


class CooccurrenceConfig(ComponentConfig):
    normalization: str = "cosine"  # cosine | count
    recency_decay: float = 1.0  # weight decay**age of each history item (1.0: a plain mean)
    max_history: int = 50
    max_neighbours: int | None = Field(
        default=None, ge=1, description="co-occurring items kept per item, its strongest by the normalised value; "
        f"None: all on catalogues of up to {LARGE_CATALOGUE_ITEMS:,} items, {LARGE_CATALOGUE_NEIGHBOURS:,} above")


class CooccurrenceComponent(Component):
    """Mean over history items h of C[h, c] / sqrt(n_h n_c): users who consumed both, normalised."""

    name = "cooccurrence"
    kind = "counts"
    config_class = CooccurrenceConfig
    config: CooccurrenceConfig

    def fit(self, data: TrainingData) -> CooccurrenceComponent:
        users, items = data.pairs()
        n_users, n_items = len(data.sequences), len(self.space)
        X = sparse.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
        X.data[:] = 1.0
        self.n = np.asarray(X.sum(0)).ravel().astype(np.float64)  # distinct users per item
        keep = self.config.max_neighbours
        if keep is None and n_items > LARGE_CATALOGUE_ITEMS:
            keep = LARGE_CATALOGUE_NEIGHBOURS
        if keep is None or keep >= n_items - 1:
            C = (X.T @ X).tocsr()
            C.setdiag(0.0)
        else:
            C = self._strongest(X, keep)
            self.config = self.config.model_copy(update={"max_neighbours": keep})  # bundle.json says what it kept
        C.eliminate_zeros()
        self.C = sparse.csr_matrix(C, dtype=np.float32)
        return self

    def _strongest(self, X: sparse.csr_matrix, keep: int) -> sparse.csr_matrix:
        """``X.T @ X`` without its diagonal, each row cut to its ``keep`` largest scoring values, a block of rows
        at a time (peak memory: one dense block, not the whole matrix)."""
        XT, n_items = X.T.tocsr(), len(self.space)
        rows, cols, vals = [], [], []
        for a in range(0, n_items, BLOCK_ITEMS):
            block = (XT[a : a + BLOCK_ITEMS] @ X).toarray()
            r = np.arange(block.shape[0])
            block[r, a + r] = 0.0
            weight = block / np.sqrt(np.maximum(self.n[a + r, None] * self.n[None, :], 1.0)) \
                if self.config.normalization == "cosine" else block
            top = np.argpartition(-weight, keep - 1, axis=1)[:, :keep]
            top_counts = np.take_along_axis(block, top, 1)
            rows.append(np.repeat(a + r, keep))
            cols.append(top.ravel())
            vals.append(top_counts.ravel())
        return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                 shape=(n_items, n_items))

    def _weights(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = history[history >= 0][-self.config.max_history :]
        w = self.config.recency_decay ** np.arange(len(known))[::-1]
        return known, w

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        known, w = self._weights(history)
        scores = np.zeros(len(candidates))
        ok = candidates >= 0
        if len(known) and ok.any():
            cols = candidates[ok]
            sub = self.C[known][:, cols].toarray().astype(np.float64)
            if self.config.normalization == "cosine":
                sub = sub / np.sqrt(np.maximum(self.n[known][:, None] * self.n[cols][None, :], 1.0))
            scores[ok] = (w[:, None] * sub).sum(0) / w.sum()
        notes = [] if len(known) else ["no history item occurs in the training interactions"]
        return scores, notes, {}

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, 0.0, 1.0) if self.config.normalization == "cosine" else scores / (1.0 + scores)

    def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
        history = self.space.rows(request.history)
        cand = int(self.space.rows([request.candidates[index]])[0])
        known, _ = self._weights(history)
        if cand < 0 or not len(known):
            return {}
        counts = self.C[known][:, [cand]].toarray()[:, 0]
        order = np.argsort(-counts, kind="stable")
        return {"cooccurring": [(self.space.items[known[k]].id, int(counts[k])) for k in order[:6] if counts[k] > 0]}

    def save_state(self, folder: Path) -> None:
        sparse.save_npz(folder / "cooccurrence.npz", self.C)
        np.save(folder / "item_users.npy", self.n)

    def load_state(self, folder: Path) -> None:
        self.C = sparse.load_npz(folder / "cooccurrence.npz").tocsr()
        self.n = np.load(folder / "item_users.npy")
