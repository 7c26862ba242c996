"""Popularity: log(1 + distinct training users of the item); items never seen in training score 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...configurable import ComponentConfig
from ..component import Component, TrainingData


class PopularityConfig(ComponentConfig):
    pass


class PopularityComponent(Component):
    """log(1 + distinct training users of the item); items never seen in training score 0."""

    name = "popularity"
    kind = "counts"
    config_class = PopularityConfig
    config: PopularityConfig

    counts: np.ndarray

    def fit(self, data: TrainingData) -> PopularityComponent:
        self.counts = np.zeros(len(self.space), dtype=np.float64)
        for seq in data.sequences:
            self.counts[np.unique(seq)] += 1
        return self

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        c = np.where(candidates >= 0, self.counts[np.maximum(candidates, 0)], 0.0)
        return np.log1p(c), [], {}

    def save_state(self, folder: Path) -> None:
        np.save(folder / "counts.npy", self.counts)

    def load_state(self, folder: Path) -> None:
        self.counts = np.load(folder / "counts.npy")
