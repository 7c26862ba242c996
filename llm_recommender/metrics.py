"""Metrics as small pure functions.

Ranking metrics work from the 1-based rank of the single ground truth among the
candidates (:func:`target_rank`):

- ``ndcg_at(rank, k) = 1 / log2(rank + 1)`` if ``rank <= k`` else 0 (one relevant item, so
  the ideal DCG is 1); ``hit_at(rank, k) = [rank <= k]``; ``reciprocal_rank = 1 / rank``.
- **Ties never favour the ground truth.** By default (``ties="pessimistic"``) the ground
  truth is placed after every candidate with an equal score, so a constant scorer gets
  the worst rank, not the best. ``ties="order"`` breaks ties by candidate position
  (earlier first), which is what :meth:`ScoreResult.ranking` does; use it to score the
  exact list a scorer returned. NaN scores count as the lowest possible score.

Probability metrics take 0/1 labels and predicted P(label = 1):
AUC (Mann-Whitney, ties count one half), log loss (natural log, probabilities clipped to
``[eps, 1 - eps]``), Brier score, and ECE over ``n_bins`` (15) equal-width bins of the
predicted probability: ``sum_b n_b / N * |mean(label in b) - mean(p in b)|``, bins
``[i/15, (i+1)/15)`` with 1.0 in the last bin. This is the calibration of P(like) itself
(not of the top-label confidence ``max(p, 1-p)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

NDCG_KS = (1, 5, 10, 20)
HR_KS = (1, 5, 10)
ECE_BINS = 15

Ties = Literal["pessimistic", "order"]


# ---- ranking ---------------------------------------------------------------------------


def target_rank(
    scores: Sequence[float] | np.ndarray,
    ground_truth_index: int,
    *,
    ties: Ties = "pessimistic",
    order: Sequence[int] | None = None,
) -> int:
    """1-based rank of the ground truth. ``order`` (an explicit best-first ranking, e.g. a
    listwise result) takes precedence over ``scores``; indices missing from it rank last."""
    if order is not None:
        order = list(order)
        if ground_truth_index in order:
            return order.index(ground_truth_index) + 1
        return len(scores) if len(scores) else len(order) + 1
    s = np.asarray(scores, dtype=float)
    if not 0 <= ground_truth_index < len(s):
        raise IndexError(f"ground_truth_index {ground_truth_index} out of range for {len(s)} candidates")
    s = np.where(np.isnan(s), -np.inf, s)
    gt = s[ground_truth_index]
    higher = int(np.sum(s > gt))
    equal_others = int(np.sum(s == gt)) - 1
    if ties == "pessimistic":
        return higher + equal_others + 1
    if ties == "order":
        return higher + int(np.sum(s[:ground_truth_index] == gt)) + 1
    raise ValueError(f"ties must be 'pessimistic' or 'order', got {ties!r}")


def ndcg_at(rank: int, k: int) -> float:
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def hit_at(rank: int, k: int) -> float:
    return 1.0 if rank <= k else 0.0


def reciprocal_rank(rank: int) -> float:
    return 1.0 / rank


def ranking_metrics(
    ranks: Iterable[int], *, ndcg_ks: Sequence[int] = NDCG_KS, hr_ks: Sequence[int] = HR_KS
) -> dict[str, float]:
    """Mean NDCG@k, HR@k and MRR over cases, from the ground truth's 1-based ranks."""
    r = [int(x) for x in ranks]
    if not r:
        raise ValueError("no ranks to average")
    out = {f"ndcg@{k}": float(np.mean([ndcg_at(x, k) for x in r])) for k in ndcg_ks}
    out |= {f"hr@{k}": float(np.mean([hit_at(x, k) for x in r])) for k in hr_ks}
    out["mrr"] = float(np.mean([reciprocal_rank(x) for x in r]))
    return out


def expected_random(
    n_candidates: int, *, ndcg_ks: Sequence[int] = NDCG_KS, hr_ks: Sequence[int] = HR_KS
) -> dict[str, float]:
    """The exact expectation of :func:`ranking_metrics` when the ground truth's rank is uniform
    on ``1..n_candidates`` (a random ordering). For 20 candidates NDCG@10 = 0.2272."""
    return ranking_metrics(range(1, n_candidates + 1), ndcg_ks=ndcg_ks, hr_ks=hr_ks)


# ---- probabilities -----------------------------------------------------------------------


def _check(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=float).ravel()
    p = np.asarray(probs, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length ({y.size} vs {p.size})")
    if y.size == 0:
        raise ValueError("no predictions")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must be in [0, 1]")
    return y, p


def auc(labels: Sequence[float] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative), ties 1/2.
    NaN when only one class is present. ``scores`` need not be probabilities."""
    y = np.asarray(labels, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    # average ranks (ties share the mean rank), then the Mann-Whitney U statistic
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y == 1].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def log_loss(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, *, eps: float = 1e-15) -> float:
    y, p = _check(labels, probs)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray) -> float:
    y, p = _check(labels, probs)
    return float(np.mean((p - y) ** 2))


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram; ``mean_predicted``/``fraction_positive`` are None when empty."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    fraction_positive: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_bins(
    labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, *, n_bins: int = ECE_BINS
) -> list[ReliabilityBin]:
    """Equal-width bins of the predicted probability, for reliability diagrams and ECE."""
    y, p = _check(labels, probs)
    idx = _bin_index(p, n_bins)
    out = []
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        out.append(
            ReliabilityBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                count=n,
                mean_predicted=float(p[m].mean()) if n else None,
                fraction_positive=float(y[m].mean()) if n else None,
            )
        )
    return out


def ece(labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, *, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``n_bins`` equal-width bins (see the module docstring)."""
    bins = reliability_bins(labels, probs, n_bins=n_bins)
    total = sum(b.count for b in bins)
    return float(
        sum(b.count / total * abs(b.fraction_positive - b.mean_predicted) for b in bins if b.count)  # type: ignore[operator]
    )


def probability_metrics(
    labels: Sequence[float] | np.ndarray, probs: Sequence[float] | np.ndarray, *, n_bins: int = ECE_BINS
) -> dict[str, float]:
    """AUC, log loss, Brier and ECE in one dict."""
    return {
        "auc": auc(labels, probs),
        "log_loss": log_loss(labels, probs),
        "brier": brier(labels, probs),
        "ece": ece(labels, probs, n_bins=n_bins),
    }
