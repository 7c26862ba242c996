"""Random scores: seeded and deterministic per request (the same request always gets the
same scores, whatever else is in the batch)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..protocol import RankRequest
from ..scorers.base import ScoreResult
from .base import BaselineScorer


def request_seed(request: RankRequest) -> int:
    key = "\x1e".join(["\x1f".join(h.id for h in request.history), "\x1f".join(c.id for c in request.candidates)])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


class RandomScorer(BaselineScorer):
    """Uniform scores in [0, 1); the probability is the score itself (uninformative)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        self._check_cutoffs(requests, cutoffs)
        out = []
        for request in requests:
            rng = np.random.default_rng([self.seed, request_seed(request)])
            s = rng.random(len(request.candidates))
            out.append(ScoreResult(scores=s, probabilities=s.copy(), history_used=len(request.history)))
        return out
