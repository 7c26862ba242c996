"""Named feature columns for the feature calibrator / hybrid scorer.

A :class:`FeatureSet` holds one row per (user, candidate) and named columns. A column is
a scalar per row (an LLM score, an embedding similarity, log popularity) or a vector
per row (a representation such as ``h_u`` or ``h_i``). The eval runner fills one per
request (rows aligned with ``request.candidates``); for fitting, the validation
requests' sets are joined with :meth:`FeatureSet.concat`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import InvalidRequestError


class FeatureSet:
    """Ordered named columns, each an array of shape ``(n,)`` or ``(n, d)``."""

    def __init__(self, columns: Mapping[str, Any] | None = None, n_rows: int | None = None) -> None:
        self._cols: dict[str, np.ndarray] = {}
        self._n = n_rows
        for name, values in (columns or {}).items():
            self.add(name, values)

    def add(self, name: str, values: Any) -> FeatureSet:
        """Add (or replace) a column; all columns must have the same number of rows."""
        if not isinstance(name, str) or not name:
            raise InvalidRequestError("feature names must be non-empty strings", param="features")
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 0:
            if self._n is None:
                raise InvalidRequestError(
                    f"feature {name!r}: a scalar needs a known row count", param=f"features.{name}"
                )
            arr = np.full(self._n, float(arr))
        if arr.ndim not in (1, 2):
            raise InvalidRequestError(
                f"feature {name!r} must be 1-D or 2-D, got shape {arr.shape}", param=f"features.{name}"
            )
        if self._n is None:
            self._n = arr.shape[0]
        elif arr.shape[0] != self._n:
            raise InvalidRequestError(
                f"feature {name!r} has {arr.shape[0]} rows, expected {self._n}", param=f"features.{name}"
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidRequestError(f"feature {name!r} has non-finite values", param=f"features.{name}")
        self._cols[name] = arr.reshape(arr.shape[0], -1)
        return self

    @property
    def names(self) -> list[str]:
        return list(self._cols)

    @property
    def n_rows(self) -> int:
        return self._n or 0

    def dim(self, name: str) -> int:
        return self._require(name).shape[1]

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __len__(self) -> int:
        return self.n_rows

    def _require(self, name: str) -> np.ndarray:
        try:
            return self._cols[name]
        except KeyError:
            have = ", ".join(self._cols) or "none"
            raise InvalidRequestError(
                f"missing feature {name!r} (features present: {have})", param=f"features.{name}"
            ) from None

    def column(self, name: str) -> np.ndarray:
        """The column as ``(n,)`` for scalar features, ``(n, d)`` for vector features."""
        arr = self._require(name)
        return arr[:, 0] if arr.shape[1] == 1 else arr

    def matrix(self, names: Iterable[str], dims: Iterable[int] | None = None) -> np.ndarray:
        """Stack ``names`` into an ``(n, sum(dims))`` design matrix, checking each width."""
        names = list(names)
        parts = [self._require(n) for n in names]
        if dims is not None:
            for name, part, want in zip(names, parts, dims):
                if part.shape[1] != want:
                    raise InvalidRequestError(
                        f"feature {name!r} has width {part.shape[1]}, the calibrator was fitted with {want}",
                        param=f"features.{name}",
                    )
        if not parts:
            return np.zeros((self.n_rows, 0))
        return np.concatenate(parts, axis=1)

    @classmethod
    def concat(cls, sets: Iterable[FeatureSet]) -> FeatureSet:
        """Join row-wise (e.g. all validation requests); every set must have the same columns."""
        sets = list(sets)
        if not sets:
            raise InvalidRequestError("no feature sets to join", param="features")
        names = sets[0].names
        for i, fs in enumerate(sets[1:], start=1):
            if fs.names != names:
                raise InvalidRequestError(f"feature set {i} has columns {fs.names}, expected {names}", param="features")
        return cls({n: np.concatenate([fs._cols[n] for fs in sets], axis=0) for n in names})

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}[{a.shape[1]}]" if a.shape[1] > 1 else n for n, a in self._cols.items())
        return f"FeatureSet(rows={self.n_rows}, columns=[{cols}])"
