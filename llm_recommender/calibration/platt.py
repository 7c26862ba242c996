"""Platt scaling: P = sigmoid(a * s + b), fitted by logistic regression on one score."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._math import calibrator_input, check_finite, check_labels, check_source, fit_logistic, sigmoid
from .base import Calibrator, register_calibrator


@register_calibrator
class PlattCalibrator(Calibrator):
    """Platt scaling on the raw score (or, with ``source``, on the model's log-probability/logit).

    ``fit`` uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) and 1/(N- + 2)) by default,
    which keeps ``a`` finite on separable validation data.
    """

    name = "platt"

    def __init__(self, a: float = 1.0, b: float = 0.0, source: str = "score") -> None:
        self.a, self.b = float(a), float(b)
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError("a and b must be finite")
        self.source = check_source(source)

    def transform(self, scores: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.a * calibrator_input(self.source, scores, probabilities) + self.b)

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        source: str = "score",
        smooth_targets: bool = True,
        **_: Any,
    ) -> PlattCalibrator:
        x = check_finite(calibrator_input(check_source(source), scores, probabilities), "scores")
        y = check_labels(labels, x.shape[0])
        if smooth_targets:
            n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
            y = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        theta, bias = fit_logistic(x[:, None], y)
        return cls(a=float(theta[0]), b=bias, source=source)

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "source": self.source}
