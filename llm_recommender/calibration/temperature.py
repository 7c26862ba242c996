"""Temperature scaling: one fitted temperature T > 0 that softens or sharpens the model.

Two modes, because the strategies output two kinds of distribution:

* ``softmax`` (verbalizer, listwise): the strategy's probabilities are a distribution
  over the request's candidates. The input is their log (``source="log_probability"``),
  i.e. the label logits up to a constant, and the output is ``softmax(log p / T)`` over
  the request's candidates, so probabilities still sum to 1 per request. This is Guo et
  al.'s temperature scaling applied per request.
* ``sigmoid`` (pointwise): the probability is P(Yes) against P(No); the input is its
  log-odds (``source="logit"``, equal to the pointwise score) and the output is
  ``sigmoid(logit / T)``.

``fit`` chooses T to minimise the binary log loss of the calibrated per-candidate
probabilities against the per-candidate labels (the quantity the eval reports), by a
log-spaced grid over [0.01, 100] refined with golden-section search. The softmax mode
needs ``groups`` (the request index of each row) to know which rows share a softmax.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..configurable import ComponentConfig
from ..errors import InvalidRequestError
from ._math import Source, calibrator_input, check_finite, check_labels, check_source, log_loss, sigmoid
from .base import Calibrator, register_calibrator

MODES = ("softmax", "sigmoid")
DEFAULT_SOURCE = {"softmax": "log_probability", "sigmoid": "logit"}
LOG_T_RANGE = (math.log(0.01), math.log(100.0))


def _softmax_rows(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True)


class TemperatureConfig(ComponentConfig):
    temperature: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    mode: Literal["softmax", "sigmoid"] = "softmax"
    source: Source | None = None  # None: the mode's default (DEFAULT_SOURCE)

    @model_validator(mode="after")
    def _default_source(self) -> TemperatureConfig:
        if self.source is None:
            self.source = DEFAULT_SOURCE[self.mode]  # type: ignore[assignment]
        return self


@register_calibrator
class TemperatureCalibrator(Calibrator):
    name = "temperature"
    config_class = TemperatureConfig
    config: TemperatureConfig

    def _from_config(self) -> None:
        self.temperature, self.mode = self.config.temperature, self.config.mode
        self.source: str = self.config.source or DEFAULT_SOURCE[self.mode]

    def transform(self, scores: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        x = calibrator_input(self.source, scores, probabilities) / self.temperature
        if self.mode == "sigmoid":
            return sigmoid(x)
        return _softmax_rows(x[None, :], np.ones((1, x.shape[0]), dtype=bool))[0]

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        mode: str = "softmax",
        source: str | None = None,
        **_options: Any,
    ) -> TemperatureCalibrator:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        proto = cls(1.0, mode, check_source(source or DEFAULT_SOURCE[mode]))
        x = check_finite(calibrator_input(proto.source, scores, probabilities), "scores")
        y = check_labels(labels, x.shape[0])
        if mode == "sigmoid":

            def loss(log_t: float) -> float:
                return log_loss(sigmoid(x / math.exp(log_t)), y)
        else:
            if groups is None:
                raise InvalidRequestError(
                    "softmax temperature scaling needs groups (request index per row)", param="groups"
                )
            g = np.asarray(groups).reshape(-1)
            if g.shape[0] != x.shape[0]:
                raise InvalidRequestError(f"{g.shape[0]} group ids for {x.shape[0]} scores", param="groups")
            _, inverse, counts = np.unique(g, return_inverse=True, return_counts=True)
            order = np.argsort(inverse, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            pos = np.arange(len(order)) - np.repeat(starts, counts)
            Z = np.zeros((len(counts), counts.max()))
            Y = np.zeros_like(Z)
            M = np.zeros_like(Z, dtype=bool)
            Z[inverse[order], pos] = x[order]
            Y[inverse[order], pos] = y[order]
            M[inverse[order], pos] = True

            def loss(log_t: float) -> float:
                return log_loss(_softmax_rows(Z / math.exp(log_t), M)[M], Y[M])

        grid = np.linspace(*LOG_T_RANGE, 181)
        values = [loss(t) for t in grid]
        i = int(np.argmin(values))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(40):  # golden-section search in the bracketing cell pair
            a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
            if loss(a) <= loss(b):
                hi = b
            else:
                lo = a
        best = (lo + hi) / 2
        if loss(best) > values[i]:
            best = grid[i]
        return cls(math.exp(best), mode, proto.source)
