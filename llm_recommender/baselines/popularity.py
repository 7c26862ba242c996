"""Popularity: how often each candidate was interacted with *before the request's cutoff*.

Fitted on (item, timestamp) arrays of all interactions the runner may use. For request
``k`` only interactions with ``timestamp < cutoff`` count (strictly before), where the
cutoff is ``cutoffs[k]`` (the runner passes the target's timestamp), or, when no cutoff
is given, the latest timestamp in the request's history. Either way the target
interaction and everything after it never count: with the history fallback, even
interactions at the same second as the last history item are left out, because in
MovieLens the target often shares that second.

Without timestamps (e.g. Amazon sequences, which only have per-user order) the counts
are static: then the runner must pass training interactions only, and cutoffs are an error.

``score`` = log(1 + count); ``probability`` = the candidate's share of the candidates'
add-one-smoothed counts (a distribution over the candidates, like the verbalizer's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import RankRequest
from ..scorers.base import ScoreResult
from .base import BaselineScorer


def _as_time(value: Any, what: str, param: str = "cutoffs") -> float:
    """A number (epoch seconds or an order index) or an ISO 8601 date/time string."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        try:
            stamp = datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidRequestError(
                f"{what} must be a number (epoch seconds or an order index) or an ISO 8601 time, got {value!r}",
                param=param,
            ) from None
        if stamp.tzinfo is None:  # naive times are read as UTC, so results do not depend on the machine
            stamp = stamp.replace(tzinfo=timezone.utc)
        t = stamp.timestamp()
    if math.isnan(t):
        raise InvalidRequestError(f"{what} is NaN", param="cutoffs")
    return t


class PopularityScorer(BaselineScorer):
    name = "popularity"

    def __init__(self, items: Sequence[Any] | None = None, timestamps: Sequence[Any] | None = None) -> None:
        self._index: dict[str, tuple[int, int]] | None = None
        self._times: np.ndarray | None = None
        self._static: dict[str, int] | None = None
        if items is not None:
            self.fit(items, timestamps)

    def is_fitted(self) -> bool:
        return self._index is not None or self._static is not None

    @property
    def time_aware(self) -> bool:
        return self._index is not None

    def fit(self, items: Sequence[Any], timestamps: Sequence[Any] | None = None) -> PopularityScorer:
        """``items[j]`` was interacted with at ``timestamps[j]`` (one row per interaction)."""
        ids = np.asarray([str(i) for i in items], dtype=object)
        if timestamps is None:
            uniq, counts = np.unique(ids.astype(str), return_counts=True)
            self._static, self._index, self._times = dict(zip(uniq.tolist(), counts.tolist())), None, None
            return self
        try:
            times = np.asarray(timestamps, dtype=float)
        except (TypeError, ValueError):
            times = np.array([_as_time(t, f"timestamps[{j}]", "timestamps") for j, t in enumerate(timestamps)])
        if times.shape != ids.shape:
            raise InvalidRequestError(f"{times.shape[0]} timestamps for {ids.shape[0]} items", param="timestamps")
        if np.isnan(times).any():
            raise InvalidRequestError("timestamps contain missing values", param="timestamps")
        order = np.lexsort((times, ids.astype(str)))
        ids_sorted, self._times = ids[order].astype(str), times[order]
        uniq, starts, counts = np.unique(ids_sorted, return_index=True, return_counts=True)
        self._index = {u: (int(s), int(s + c)) for u, s, c in zip(uniq.tolist(), starts, counts)}
        self._static = None
        return self

    def counts(self, item_ids: Sequence[str], cutoff: Any = None) -> np.ndarray:
        """Interactions per item strictly before ``cutoff`` (static counts when not time-aware)."""
        self._check_fitted()
        if self._static is not None:
            if cutoff is not None:
                raise InvalidRequestError(
                    "popularity was fitted without timestamps, so it cannot honour a cutoff; "
                    "fit it with timestamps or pass only training interactions and no cutoffs",
                    param="cutoffs",
                )
            return np.array([self._static.get(str(i), 0) for i in item_ids], dtype=float)
        t = _as_time(cutoff, "cutoff")
        out = np.zeros(len(item_ids))
        assert self._index is not None and self._times is not None
        for j, item in enumerate(item_ids):
            span = self._index.get(str(item))
            if span is not None:
                lo, hi = span
                out[j] = np.searchsorted(self._times[lo:hi], t, side="left")  # times < t
        return out

    def _cutoff(self, request: RankRequest, given: Any, k: int) -> Any:
        if self._static is not None or given is not None:
            return given
        stamps = [h.timestamp for h in request.history if h.timestamp is not None]
        if not stamps:
            raise InvalidRequestError(
                f"request {k}: popularity needs a cutoff time (pass cutoffs=...) or history timestamps; "
                "counting all interactions would leak the future",
                param="cutoffs",
            )
        return max(_as_time(s, f"request {k} history timestamp") for s in stamps)

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        self._check_fitted()
        out = []
        for k, (request, given) in enumerate(zip(requests, self._check_cutoffs(requests, cutoffs))):
            cutoff = self._cutoff(request, given, k)
            c = self.counts([cand.id for cand in request.candidates], cutoff)
            share = (c + 1.0) / (c + 1.0).sum()
            out.append(
                ScoreResult(
                    scores=np.log1p(c),
                    probabilities=share,
                    history_used=len(request.history),
                    details={"counts": c.tolist(), "cutoff": cutoff},
                )
            )
        return out
