"""Item-to-item co-occurrence: items consumed by the same users go together.

Fitted on the training split only: ``C[h, c]`` counts the distinct users who consumed both
``h`` and ``c``. A candidate scores the recency-weighted mean over the known history items of
``C[h, c] / sqrt(n_h n_c)`` (``cosine``, in [0, 1], so blockbusters do not win on count alone)
or of the raw count (``count``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from ...configurable import ComponentConfig
from ...protocol import RankRequest
from ..component import Component, TrainingData


class CooccurrenceConfig(ComponentConfig):
    normalization: str = "cosine"  # cosine | count
    recency_decay: float = 1.0  # weight decay**age of each history item (1.0: a plain mean)
    max_history: int = 50


class CooccurrenceComponent(Component):
    """Mean over history items h of C[h, c] / sqrt(n_h n_c): users who consumed both, normalised."""

    name = "cooccurrence"
    kind = "counts"
    config_class = CooccurrenceConfig
    config: CooccurrenceConfig

    def fit(self, data: TrainingData) -> CooccurrenceComponent:
        users, items = data.pairs()
        n_users = len(data.sequences)
        X = sparse.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, len(self.space)))
        X.data[:] = 1.0
        C = (X.T @ X).tocsr()
        self.n = C.diagonal().astype(np.float64)
        C.setdiag(0.0)
        C.eliminate_zeros()
        self.C = C.astype(np.float32)
        return self

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
