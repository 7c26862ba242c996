"""The feature model P(u, i) = sigmoid(theta^T x(u, i) + b): calibrator and hybrid in one.

``x(u, i)`` is a :class:`FeatureSet` row: LLM scores, embedding similarity, log
popularity, co-occurrence, and optionally representation vectors (``h_u``, ``h_i`` or
their product ``h_u*h_i``; see :mod:`.hybrid`). With ``h_u`` and ``h_i`` as the only
features this is the seed's ``sigmoid(theta^T [h_u; h_i])``.

Features are standardised with the validation means/scales, then theta and the bias are
fitted by L2-penalised logistic regression (``l2`` on the standardised weights). The
JSON stores, per feature in order, its name, width, mean, scale and weights, plus the
bias. At transform time every fitted feature must be present with the same width; a
missing one is an error naming it.

Through the ``Calibrator.transform(scores, probabilities)`` seam (the Recommender) the
only features available are ``score`` and ``probability``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from ..configurable import ComponentConfig
from ._math import check_finite, check_labels, fit_logistic, sigmoid
from .base import Calibrator, register_calibrator
from .features import FeatureSet


def _seam_features(scores: Any, probabilities: Any | None) -> FeatureSet:
    fs = FeatureSet({"score": np.asarray(scores, dtype=float).reshape(-1)})
    if probabilities is not None:
        fs.add("probability", np.asarray(probabilities, dtype=float).reshape(-1))
    return fs


class LogisticFeature(ComponentConfig):
    """One feature column: its width, the validation mean/scale it is standardised with, its weights."""

    name: str = Field(min_length=1)
    dim: int = Field(default=1, ge=1)
    mean: list[float] | None = None  # None: zeros
    scale: list[float] | None = None  # None: ones
    theta: list[float]

    @model_validator(mode="after")
    def _check(self) -> LogisticFeature:
        self.mean = [0.0] * self.dim if self.mean is None else self.mean
        self.scale = [1.0] * self.dim if self.scale is None else self.scale
        parts = (self.mean, self.scale, self.theta)
        if any(len(p) != self.dim for p in parts):
            raise ValueError(f"feature {self.name!r}: mean, scale and theta must each have {self.dim} values")
        if not all(math.isfinite(v) for p in parts for v in p) or any(v <= 0 for v in self.scale):
            raise ValueError(f"feature {self.name!r}: values must be finite and scales positive")
        return self


class LogisticConfig(ComponentConfig):
    features: list[LogisticFeature] = Field(min_length=1)
    bias: float = Field(default=0.0, allow_inf_nan=False)
    l2: float = Field(default=1.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _unique(self) -> LogisticConfig:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        return self


@register_calibrator
class FeatureLogisticCalibrator(Calibrator):
    name = "logistic"
    config_class = LogisticConfig
    config: LogisticConfig

    def _from_config(self) -> None:
        feats = self.config.features
        self.names: list[str] = [f.name for f in feats]
        self.dims: list[int] = [f.dim for f in feats]
        self.mean = np.concatenate([np.asarray(f.mean, dtype=float) for f in feats])
        self.scale = np.concatenate([np.asarray(f.scale, dtype=float) for f in feats])
        self.theta = np.concatenate([np.asarray(f.theta, dtype=float) for f in feats])
        self.bias, self.l2 = self.config.bias, self.config.l2

    # ---- transform ----------------------------------------------------------------
    def decision_function(self, features: FeatureSet) -> np.ndarray:
        """The logit theta^T x + b per row (a score for ranking)."""
        X = features.matrix(self.names, self.dims)
        return ((X - self.mean) / self.scale) @ self.theta + self.bias

    def transform_features(self, features: FeatureSet) -> np.ndarray:
        return sigmoid(self.decision_function(features))

    def transform(self, scores: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        return self.transform_features(_seam_features(scores, probabilities))

    # ---- fit ----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        scores: FeatureSet | np.ndarray,
        labels: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        l2: float = 1.0,
        names: list[str] | None = None,
        **_: Any,
    ) -> FeatureLogisticCalibrator:
        """Fit on a :class:`FeatureSet` of validation rows (or, via the seam, scores/probabilities).

        ``names`` picks and orders the columns to use (default: all of them).
        """
        features = scores if isinstance(scores, FeatureSet) else _seam_features(scores, probabilities)
        names = list(names or features.names)
        dims = [features.dim(n) for n in names]
        X = check_finite(features.matrix(names, dims), "features")
        y = check_labels(labels, X.shape[0])
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        theta, bias = fit_logistic((X - mean) / scale, y, l2=l2)
        out, start = [], 0
        for name, dim in zip(names, dims):
            sl = slice(start, start + dim)
            out.append(
                {
                    "name": name,
                    "dim": dim,
                    "mean": mean[sl].tolist(),
                    "scale": scale[sl].tolist(),
                    "theta": theta[sl].tolist(),
                }
            )
            start += dim
        return cls(out, bias=bias, l2=l2)

    def coefficients(self) -> dict[str, list[float]]:
        """Weights per feature on the standardised scale (comparable across features)."""
        out, start = {}, 0
        for name, dim in zip(self.names, self.dims):
            out[name] = self.theta[start : start + dim].tolist()
            start += dim
        return out
