"""Isotonic regression: a non-decreasing step function of one score, interpolated.

Fitted by pool-adjacent-violators on (score, label); the JSON stores the breakpoints
``x`` (increasing) and values ``y`` (non-decreasing). Between breakpoints the output is
linearly interpolated, outside them it is clamped to the end values. Outputs are kept
in [eps, 1 - eps] so that one confidently wrong block cannot make the log loss infinite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..configurable import ComponentConfig
from ._math import Source
from .base import SingleScoreCalibrator, register_calibrator


def pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocks of the isotonic fit: (start index, end index inclusive, value) per block."""
    starts: list[int] = []
    ends: list[int] = []
    values: list[float] = []
    weights: list[float] = []
    for i, (yi, wi) in enumerate(zip(y, w)):
        starts.append(i)
        ends.append(i)
        values.append(float(yi))
        weights.append(float(wi))
        while len(values) > 1 and values[-2] > values[-1]:
            wsum = weights[-2] + weights[-1]
            merged = (values[-2] * weights[-2] + values[-1] * weights[-1]) / wsum
            ends[-2] = ends[-1]
            values[-2], weights[-2] = merged, wsum
            del starts[-1], ends[-1], values[-1], weights[-1]
    return np.array(starts), np.array(ends), np.array(values)


class IsotonicConfig(ComponentConfig):
    x: list[float] = Field(description="breakpoints, increasing")
    y: list[float] = Field(description="values at the breakpoints, non-decreasing, in [0, 1]")
    source: Source = "score"
    eps: float = Field(default=1e-4, ge=0, lt=0.5)

    @model_validator(mode="after")
    def _check(self) -> IsotonicConfig:
        x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        if x.shape != y.shape or x.size == 0:
            raise ValueError("x and y must be non-empty lists of the same length")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("x and y must be finite")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise ValueError("x must be increasing and y non-decreasing")
        if np.any((y < 0) | (y > 1)):
            raise ValueError("y must lie in [0, 1]")
        return self


@register_calibrator
class IsotonicCalibrator(SingleScoreCalibrator):
    name = "isotonic"
    config_class = IsotonicConfig
    config: IsotonicConfig

    def calibrate(self, x: np.ndarray) -> np.ndarray:
        eps = self.config.eps
        return np.clip(np.interp(x, self.config.x, self.config.y), eps, 1.0 - eps)

    @classmethod
    def fit_input(cls, x: np.ndarray, y: np.ndarray, *, source: str,
                  eps: float = 1e-4, **_: Any) -> IsotonicCalibrator:
        ux, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)  # ties share one value
        mean_y = np.bincount(inverse, weights=y) / counts
        starts, ends, values = pool_adjacent_violators(mean_y, counts.astype(float))
        xs: list[float] = []
        ys: list[float] = []
        for a, b, v in zip(starts, ends, values):
            xs.append(float(ux[a]))
            ys.append(float(v))
            if b != a:
                xs.append(float(ux[b]))
                ys.append(float(v))
        return cls(xs, ys, source=source, eps=eps)
