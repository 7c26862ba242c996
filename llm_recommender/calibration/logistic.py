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

from ._math import check_finite, check_labels, fit_logistic, sigmoid
from .base import Calibrator, register_calibrator
from .features import FeatureSet


def _seam_features(scores: Any, probabilities: Any | None) -> FeatureSet:
    fs = FeatureSet({"score": np.asarray(scores, dtype=float).reshape(-1)})
    if probabilities is not None:
        fs.add("probability", np.asarray(probabilities, dtype=float).reshape(-1))
    return fs


@register_calibrator
class FeatureLogisticCalibrator(Calibrator):
    name = "logistic"

    def __init__(self, features: list[dict[str, Any]], bias: float = 0.0, l2: float = 1.0) -> None:
        if not isinstance(features, list) or not features:
            raise ValueError("features must be a non-empty list of {name, dim, mean, scale, theta}")
        self.names: list[str] = []
        self.dims: list[int] = []
        means, scales, thetas = [], [], []
        for i, f in enumerate(features):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                raise ValueError(f"features[{i}] must be an object with a string 'name'")
            dim = int(f.get("dim", 1))
            parts = [
                np.asarray(f.get(k, default), dtype=float).reshape(-1)
                for k, default in (("mean", [0.0] * dim), ("scale", [1.0] * dim), ("theta", None))
            ]
            if any(p.shape != (dim,) for p in parts):
                raise ValueError(f"feature {f['name']!r}: mean, scale and theta must each have {dim} values")
            if not all(np.all(np.isfinite(p)) for p in parts) or np.any(parts[1] <= 0):
                raise ValueError(f"feature {f['name']!r}: values must be finite and scales positive")
            if f["name"] in self.names:
                raise ValueError(f"duplicate feature {f['name']!r}")
            self.names.append(f["name"])
            self.dims.append(dim)
            means.append(parts[0])
            scales.append(parts[1])
            thetas.append(parts[2])
        self.mean = np.concatenate(means)
        self.scale = np.concatenate(scales)
        self.theta = np.concatenate(thetas)
        self.bias = float(bias)
        self.l2 = float(l2)
        if not (math.isfinite(self.bias) and math.isfinite(self.l2)):
            raise ValueError("bias and l2 must be finite")

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

    def params(self) -> dict[str, Any]:
        features, start = [], 0
        for name, dim in zip(self.names, self.dims):
            sl = slice(start, start + dim)
            features.append(
                {
                    "name": name,
                    "dim": dim,
                    "mean": [float(v) for v in self.mean[sl]],
                    "scale": [float(v) for v in self.scale[sl]],
                    "theta": [float(v) for v in self.theta[sl]],
                }
            )
            start += dim
        return {"features": features, "bias": self.bias, "l2": self.l2}
