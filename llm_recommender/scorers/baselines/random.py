"""Uniform random scores: the chance reference every strategy is measured against (never in a fusion)."""

from __future__ import annotations

import zlib

import numpy as np

from ...configurable import ComponentConfig
from ..component import Component


class RandomConfig(ComponentConfig):
    seed: int = 0


class RandomComponent(Component):
    """Scores seeded by the request's items: the same request always gets the same scores, whatever
    else is in the batch; the probability is the score itself (uninformative). Nothing to fit: a
    bundle serves it without ``--components random`` (which keeps it as a control in the fit)."""

    name = "random"
    kind = "reference"
    needs_fit = False
    side = "request"
    config_class = RandomConfig
    config: RandomConfig

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        key = "|".join([str(self.config.seed), *(h.id for h in request.history), "#", *(c.id for c in request.candidates)])
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return rng.random(len(candidates)), [], {}

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)
