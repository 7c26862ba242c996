"""Item-to-item co-occurrence: items consumed by the same users go together.

Fitted on the *training* interactions only (the runner's train split: no validation or
test targets). ``C[i, j]`` is the number of distinct users who interacted with both
``i`` and ``j`` (``i != j``), ``n_i`` the number of users of ``i``. For a request the
score of candidate ``c`` is the mean over the distinct known history items ``h`` of
the normalised co-occurrence:

* ``cosine`` (default): ``C[h, c] / sqrt(n_h * n_c)``, in [0, 1], so blockbusters do
  not win on count alone;
* ``jaccard``: ``C[h, c] / (n_h + n_c - C[h, c])``, in [0, 1];
* ``count``: ``C[h, c]`` (the mean raw count).

``probability`` is the score for cosine/jaccard and ``score / (1 + score)`` for count:
a monotone map into [0, 1], to be calibrated before reading it as a probability.
Unknown items (not in training) score 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import RankRequest
from ..scorers.base import ScoreResult
from .base import BaselineScorer

NORMALIZATIONS = ("cosine", "jaccard", "count")


class CooccurrenceScorer(BaselineScorer):
    name = "cooccurrence"

    def __init__(
        self, users: Sequence[Any] | None = None, items: Sequence[Any] | None = None, normalization: str = "cosine"
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise InvalidRequestError(
                f"unknown normalization {normalization!r}; valid: {', '.join(NORMALIZATIONS)}", param="normalization"
            )
        self.normalization = normalization
        self._item_index: dict[str, int] | None = None
        if users is not None or items is not None:
            if users is None or items is None:
                raise InvalidRequestError("co-occurrence needs both users and items", param="items")
            self.fit(users, items)

    def is_fitted(self) -> bool:
        return self._item_index is not None

    def fit(self, users: Sequence[Any], items: Sequence[Any]) -> CooccurrenceScorer:
        """One row per training interaction: ``users[j]`` interacted with ``items[j]``."""
        from scipy import sparse

        u = np.asarray([str(x) for x in users])
        i = np.asarray([str(x) for x in items])
        if u.shape != i.shape:
            raise InvalidRequestError(f"{u.shape[0]} users for {i.shape[0]} items", param="users")
        user_ids, u_idx = np.unique(u, return_inverse=True)
        item_ids, i_idx = np.unique(i, return_inverse=True)
        X = sparse.csr_matrix((np.ones(len(u_idx)), (u_idx, i_idx)), shape=(len(user_ids), len(item_ids)))
        X.data[:] = 1.0  # repeated interactions count once per user
        C = (X.T @ X).tocsr()
        self._n = C.diagonal().astype(float)
        C.setdiag(0.0)
        C.eliminate_zeros()
        self._C = C
        self._item_index = {k: j for j, k in enumerate(item_ids.tolist())}
        return self

    def cooccurrence(self, a: str, b: str) -> int:
        """Users who interacted with both ``a`` and ``b`` (0 for unknown items or a == b)."""
        self._check_fitted()
        assert self._item_index is not None
        ia, ib = self._item_index.get(str(a)), self._item_index.get(str(b))
        return 0 if ia is None or ib is None else int(self._C[ia, ib])

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        """``cutoffs`` is accepted for a uniform call and ignored: counts come from training data only."""
        self._check_fitted()
        self._check_cutoffs(requests, cutoffs)
        assert self._item_index is not None
        out = []
        for request in requests:
            hist = sorted({self._item_index[h.id] for h in request.history if h.id in self._item_index})
            cand = [self._item_index.get(c.id, -1) for c in request.candidates]
            known = [j for j, c in enumerate(cand) if c >= 0]
            scores = np.zeros(len(cand))
            if hist and known:
                cols = np.array([cand[j] for j in known])
                sub = self._C[hist][:, cols].toarray()
                n_h, n_c = self._n[hist][:, None], self._n[cols][None, :]
                if self.normalization == "cosine":
                    sub = sub / np.sqrt(n_h * n_c)
                elif self.normalization == "jaccard":
                    sub = sub / (n_h + n_c - sub)
                scores[known] = sub.mean(axis=0)
            probs = scores / (1.0 + scores) if self.normalization == "count" else np.clip(scores, 0.0, 1.0)
            notes = [] if hist else ["no history item occurs in the training interactions; all scores are 0"]
            out.append(ScoreResult(scores=scores, probabilities=probs, history_used=len(hist), notes=notes))
        return out
