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
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..configurable import ComponentConfig
from ..errors import InvalidRequestError
from ._math import Source, log_loss, sigmoid
from .base import SingleScoreCalibrator, register_calibrator

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


def _minimise(loss: Callable[[float], float]) -> float:
    """log T minimising ``loss``: a log-spaced grid, then golden-section search in the best cell pair."""
    grid = np.linspace(*LOG_T_RANGE, 181)
    values = [loss(t) for t in grid]
    i = int(np.argmin(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(a) <= loss(b):
            hi = b
        else:
            lo = a
    best = (lo + hi) / 2
    return best if loss(best) <= values[i] else float(grid[i])


def _padded_rows(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores and labels as one padded row per request, with the mask of real entries."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.arange(len(order)) - np.repeat(starts, counts)
    Z = np.zeros((len(counts), counts.max()))
    Y = np.zeros_like(Z)
    M = np.zeros_like(Z, dtype=bool)
    Z[inverse[order], pos] = x[order]
    Y[inverse[order], pos] = y[order]
    M[inverse[order], pos] = True
    return Z, Y, M


@register_calibrator
class TemperatureCalibrator(SingleScoreCalibrator):
    name = "temperature"
    config_class = TemperatureConfig
    config: TemperatureConfig

    def calibrate(self, x: np.ndarray) -> np.ndarray:
        x = x / self.config.temperature
        if self.config.mode == "sigmoid":
            return sigmoid(x)
        return _softmax_rows(x[None, :], np.ones((1, x.shape[0]), dtype=bool))[0]

    @classmethod
    def default_source(cls, mode: str = "softmax", **_: Any) -> str:
        return DEFAULT_SOURCE.get(mode, "score")

    @classmethod
    def fit_input(cls, x: np.ndarray, y: np.ndarray, *, source: str, groups: np.ndarray | None = None,
                  mode: str = "softmax", **_: Any) -> TemperatureCalibrator:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
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
            Z, Y, M = _padded_rows(x, y, g)

            def loss(log_t: float) -> float:
                return log_loss(_softmax_rows(Z / math.exp(log_t), M)[M], Y[M])

        return cls(math.exp(_minimise(loss)), mode, source)
