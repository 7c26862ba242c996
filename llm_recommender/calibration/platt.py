"""Platt scaling: P = sigmoid(a * s + b), fitted by logistic regression on one score."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from ..configurable import ComponentConfig
from ._math import Source, fit_logistic, sigmoid
from .base import SingleScoreCalibrator, register_calibrator


class PlattConfig(ComponentConfig):
    a: float = Field(default=1.0, allow_inf_nan=False)
    b: float = Field(default=0.0, allow_inf_nan=False)
    source: Source = "score"


@register_calibrator
class PlattCalibrator(SingleScoreCalibrator):
    """Platt scaling on the raw score (or, with ``source``, on the model's log-probability/logit).

    ``fit`` uses Platt's smoothed targets ((N+ + 1)/(N+ + 2) and 1/(N- + 2)) by default,
    which keeps ``a`` finite on separable validation data.
    """

    name = "platt"
    config_class = PlattConfig
    config: PlattConfig

    def calibrate(self, x: np.ndarray) -> np.ndarray:
        return sigmoid(self.config.a * x + self.config.b)

    @classmethod
    def fit_input(cls, x: np.ndarray, y: np.ndarray, *, source: str,
                  smooth_targets: bool = True, **_: Any) -> PlattCalibrator:
        if smooth_targets:
            n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
            y = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        theta, bias = fit_logistic(x[:, None], y)
        return cls(a=float(theta[0]), b=bias, source=source)
