"""The fused strategy: P(u, i) = sigmoid(theta^T x(u, i) + b) over the kept components' scores.

``x`` holds, per component, its raw score and its score standardised within the
request (so a component whose scale drifts between users still ranks). Fitted by
L2-penalised logistic regression on the *validation* targets' candidate rows only
(label 1 = the held-out item, 0 = the sampled negatives), so its sigmoid is already a
calibrated probability; no second calibrator is stacked on top.

Case-aware (a fit with cold items, ``--protocol cold-start``): the fusion is also fitted on
cold validation cases, and ``x`` gains a ``cold`` flag per candidate (an item no component
saw in training) and, per component, its score times that flag. So one fusion can weight
the text path for cold candidates and the collaborative components for warm ones, and
calibrate each.

History-length terms: per component, its score times the request's *shortness* (``1 / sqrt(1 + h)`` for a
history of ``h`` items), so one fusion can lean on popularity for a two-item history and on the sequence
model for a fifty-item one. The fit adds them after choosing the components, and keeps them only if they
raise the cross-validated NDCG@10 by ``min_gain`` and by more than the noise (:func:`history_terms_gain`).

Component selection (:func:`select_components`) is backward elimination on user-grouped
K-fold cross-validated NDCG@10 over the validation cases: a component stays only if
removing it costs at least ``min_gain`` (an LLM component: also one standard error of its per-user
gain); each component's marginal gain and that error are recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration.features import FeatureSet
from ..calibration.logistic import FeatureLogisticCalibrator
from ..configurable import ComponentConfig
from ..metrics import ranking_metrics, target_rank
from ..protocol import Item, RankRequest
from .base import Scorer, ScoreResult

FUSION_FILE = "fusion.json"
FUSED = "fused"
LLM_KIND = "llm"  # Component.kind of components that run the LLM for every request


REFERENCE_ITEMS = 64
COLD = "cold"  # case feature of a case-aware fusion: 1 for a candidate no component saw in training
SHORT = "short"  # suffix of the history-length terms: a component's score times the request's shortness


def shortness(history_len: int) -> float:
    """1 for an empty history, 0.5 for 3 items, 0.14 for 50: how much a request's history-length terms weigh."""
    return 1.0 / float(np.sqrt(1.0 + max(0, history_len)))


def request_shortness(requests: Sequence[RankRequest]) -> list[float]:
    return [shortness(len(r.history)) for r in requests]


def reference_rows(n_items: int, seed: int, k: int = REFERENCE_ITEMS) -> list[int]:
    """A fixed, seeded sample of catalogue rows: the yardstick each user's scores are standardised against."""
    return sorted(np.random.default_rng(seed).choice(n_items, size=min(k, n_items), replace=False).tolist())


def score_with_reference(scorer: Scorer, requests: list[RankRequest], reference: Sequence[Item]) -> list[ScoreResult]:
    """Score ``requests``; each result also carries the mean/std of the user's scores on the reference items.

    Standardising by the user's own score distribution over a fixed item sample makes
    components comparable across users, without making P(u, i) depend on which other
    candidates happen to be in the request.
    """
    if not reference or getattr(scorer, "kind", None) == LLM_KIND:
        # an LLM component's scores are already relative to the request (label log-probabilities of
        # one pass): 64 reference items would only cost it four more LLM passes per request
        return scorer.score_many(requests)
    n = [len(r.candidates) for r in requests]
    augmented = [r.model_copy(update={"candidates": [*r.candidates, *reference]}) for r in requests]
    out = []
    for res, k in zip(scorer.score_many(augmented), n):
        s = np.asarray(res.scores, dtype=float)
        ref = s[k:]
        res.details["reference"] = (float(ref.mean()), float(ref.std()))
        out.append(ScoreResult(scores=s[:k], probabilities=np.asarray(res.probabilities)[:k],
                               history_used=res.history_used, order=None, fallbacks=res.fallbacks,
                               notes=res.notes, details=res.details))
    return out


def request_features(results: Mapping[str, ScoreResult], names: Sequence[str],
                     cold: np.ndarray | None = None, short: float | None = None) -> FeatureSet:
    """One request's fusion features; with ``cold`` (flags per candidate) also the case features, with ``short``
    (the request's :func:`shortness`) the history-length terms."""
    fs = FeatureSet()
    per_component = {}
    for name in names:
        res = results[name]
        s = np.asarray(res.scores, dtype=float)
        fs.add(name, s)
        per_component[name] = s
        if "reference" in res.details:
            mean, sd = res.details["reference"]
            per_component[name] = (s - mean) / sd if sd > 1e-12 else np.zeros_like(s)
            fs.add(f"{name}:z", per_component[name])
    if cold is not None:
        flags = np.asarray(cold, dtype=float)
        fs.add(COLD, flags)
        for name in names:
            fs.add(f"{name}:cold", per_component[name] * flags)
    if short is not None:
        for name in names:
            fs.add(f"{name}:{SHORT}", per_component[name] * short)
    return fs


def cold_flags(untrained: Sequence[int], rows: np.ndarray) -> np.ndarray:
    """1.0 for candidates (catalogue ``rows``, -1 = not in the catalogue) that no component saw in training."""
    rows = np.asarray(rows)
    return ((rows < 0) | np.isin(rows, np.asarray(untrained, dtype=np.int64))).astype(float)


class Fusion:
    def __init__(self, components: Sequence[str], model: FeatureLogisticCalibrator,
                 reference: Sequence[int] = (), untrained: Sequence[int] | None = None,
                 history_terms: bool = False) -> None:
        self.components = list(components)
        self.model = model
        self.reference = list(reference)  # catalogue rows of the reference items
        # case-aware when set: catalogue rows no component saw in training (they, and unknown items, are cold)
        self.untrained = None if untrained is None else sorted(int(r) for r in untrained)
        self.history_terms = history_terms  # the features carry each component's score times the shortness

    @property
    def case_aware(self) -> bool:
        return self.untrained is not None

    def combine(self, results: Mapping[str, list[ScoreResult]], cold: Sequence[np.ndarray] | None = None,
                short: Sequence[float] | None = None) -> list[ScoreResult]:
        """Fused results; a case-aware fusion needs ``cold``, the flags of each request's candidates, and one
        with history terms ``short``, each request's :func:`shortness`."""
        n = len(next(iter(results.values())))
        if self.case_aware and cold is None:
            raise ValueError("a case-aware fusion needs the cold flags of the candidates")
        if self.history_terms and short is None:
            raise ValueError("a fusion with history-length terms needs each request's shortness")
        out = []
        for k in range(n):
            parts = {c: results[c][k] for c in self.components}
            fs = request_features(parts, self.components, cold[k] if self.case_aware and cold is not None else None,
                                  short[k] if self.history_terms and short is not None else None)
            logit = self.model.decision_function(fs)
            out.append(
                ScoreResult(
                    scores=logit,
                    probabilities=1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))),
                    history_used=max(r.history_used for r in parts.values()),
                    fallbacks=[f for r in parts.values() for f in r.fallbacks],
                    notes=sorted({f"{c}: {note}" for c, r in parts.items() for note in r.notes}),
                    details={
                        "components": {c: np.asarray(r.scores, dtype=float).tolist() for c, r in parts.items()},
                        "contributions": self.contributions(fs),
                        "parts": {c: r.details for c, r in parts.items()},  # what each component kept (evidence)
                    },
                )
            )
        return out

    def without(self, drop: Sequence[str]) -> Fusion:
        """The same fusion with the ``drop`` components' terms left out (a first-stage ranker for retrieval)."""
        params = self.model.params()
        feats = [f for f in params["features"] if f["name"].split(":")[0] not in set(drop)]
        model = FeatureLogisticCalibrator(feats, bias=params["bias"], l2=params["l2"])
        return Fusion([c for c in self.components if c not in set(drop)], model, self.reference, self.untrained,
                      self.history_terms)

    def contributions(self, fs: FeatureSet) -> dict[str, list[float]]:
        """theta_k * x_k (standardised) per component, summed over its features (history terms included), per
        candidate (the ``cold`` flag's own term belongs to no component and is left out)."""
        out: dict[str, np.ndarray] = {}
        start = 0
        X = fs.matrix(self.model.names, self.model.dims)
        terms = (X - self.model.mean) / self.model.scale * self.model.theta
        for name, dim in zip(self.model.names, self.model.dims):
            comp = name.split(":")[0]
            if comp in self.components:
                out[comp] = out.get(comp, 0.0) + terms[:, start : start + dim].sum(axis=1)
            start += dim
        return {c: v.tolist() for c, v in out.items()}

    # ---- fit ----------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, results: Mapping[str, list[ScoreResult]], labels: Sequence[np.ndarray], components: Sequence[str],
        *, l2: float = 1.0, rows: Sequence[int] | np.ndarray | None = None, reference: Sequence[int] = (),
        cold: Sequence[np.ndarray] | None = None, untrained: Sequence[int] | None = None,
        short: Sequence[float] | None = None,
    ) -> Fusion:
        """Fit on validation ``rows``; with ``cold`` (flags per case) a case-aware fusion whose ``untrained``
        catalogue rows mark cold candidates when it serves; with ``short`` (per case) history-length terms."""
        rows = list(range(len(labels))) if rows is None else list(rows)
        feats = [request_features({c: results[c][k] for c in components}, components,
                                  None if cold is None else cold[k], None if short is None else short[k])
                 for k in rows]
        y = np.concatenate([np.asarray(labels[k], dtype=float) for k in rows])
        untrained = (untrained if untrained is not None else []) if cold is not None else None
        return cls(components, FeatureLogisticCalibrator.fit(FeatureSet.concat(feats), y, l2=l2), reference, untrained,
                   history_terms=short is not None)

    # ---- files --------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        (folder / FUSION_FILE).write_text(
            json.dumps({"components": self.components, "reference": self.reference, "model": self.model.params()}
                       | ({"untrained": self.untrained} if self.untrained is not None else {})
                       | ({"history_terms": True} if self.history_terms else {}), indent=1) + "\n"
        )

    @classmethod
    def load(cls, folder: Path) -> Fusion:
        data = json.loads((folder / FUSION_FILE).read_text())
        m = data["model"]
        model = FeatureLogisticCalibrator(m["features"], bias=m["bias"], l2=m["l2"])
        return cls(data["components"], model, data.get("reference", []), data.get("untrained"),
                   bool(data.get("history_terms", False)))

    def coefficients(self) -> dict[str, list[float]]:
        return self.model.coefficients()


class FusedConfig(ComponentConfig):
    """What the fitted fusion is made of (read from the bundle; ``llm-rec fit`` chooses it)."""

    components: list[str] = []
    l2: float = 1.0


class FusedScorer(Scorer):
    """Component scores -> the fusion model -> calibrated P(u, i); a bundle's default strategy."""

    name = FUSED
    needs_fit = True
    side = "item"
    config_class = FusedConfig
    config: FusedConfig

    def __init__(self, components: Mapping[str, Scorer], fusion: Fusion, reference: Sequence[Item] = (),
                 rows: Callable[[Sequence[Item]], np.ndarray] | None = None) -> None:
        self.components = dict(components)
        self.fusion = fusion
        self.reference = list(reference)
        self.rows = rows  # items -> catalogue rows (-1: unknown); a case-aware fusion needs it
        if fusion.case_aware and rows is None:
            raise ValueError("a case-aware fusion needs the catalogue rows of the candidates")
        self.config = FusedConfig(components=fusion.components, l2=fusion.model.l2)

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        if not requests:
            return []
        results = {c: score_with_reference(self.components[c], requests, self.reference) for c in self.fusion.components}
        cold = None
        if self.fusion.untrained is not None and self.rows is not None:
            cold = [cold_flags(self.fusion.untrained, self.rows(r.candidates)) for r in requests]
        return self.fusion.combine(results, cold, request_shortness(requests) if self.fusion.history_terms else None)


def ndcg10(results: Sequence[ScoreResult], gt: Sequence[int]) -> float:
    return ranking_metrics(target_rank(r.scores, g) for r, g in zip(results, gt))["ndcg@10"]


def cv_case_ndcg(
    results: Mapping[str, list[ScoreResult]], labels: Sequence[np.ndarray], components: Sequence[str],
    *, folds: int = 5, l2: float = 1.0, seed: int = 0, cold: Sequence[np.ndarray] | None = None,
    groups: Sequence[str] | None = None, short: Sequence[float] | None = None,
) -> np.ndarray:
    """User-grouped K-fold NDCG@10 of the fusion of ``components``, one value per case. Without ``groups`` each
    case is its own user; with them (a user's warm and cold case) a user's cases share a fold."""
    n = len(labels)
    if groups is None:
        fold_of = np.random.default_rng(seed).permutation(n) % folds
    else:
        users = sorted(set(groups))
        user_fold = dict(zip(users, np.random.default_rng(seed).permutation(len(users)) % folds))
        fold_of = np.array([user_fold[g] for g in groups])
    gt = [int(np.argmax(lab)) for lab in labels]
    out = np.zeros(n)
    for f in range(folds):
        train = np.flatnonzero(fold_of != f)
        test = np.flatnonzero(fold_of == f)
        if not len(test):
            continue
        fusion = Fusion.fit(results, labels, components, l2=l2, rows=train, cold=cold, short=short)
        combined = fusion.combine({c: [results[c][k] for k in test] for c in components},
                                  None if cold is None else [cold[k] for k in test],
                                  None if short is None else [short[k] for k in test])
        for r, k in zip(combined, test):
            out[k] = ranking_metrics([target_rank(r.scores, gt[k])])["ndcg@10"]
    return out


def cv_ndcg(
    results: Mapping[str, list[ScoreResult]], labels: Sequence[np.ndarray], components: Sequence[str],
    *, folds: int = 5, l2: float = 1.0, seed: int = 0, cold: Sequence[np.ndarray] | None = None,
    groups: Sequence[str] | None = None,
) -> float:
    """User-grouped K-fold NDCG@10 of the fusion of ``components`` (the mean of :func:`cv_case_ndcg`)."""
    return float(cv_case_ndcg(results, labels, components, folds=folds, l2=l2, seed=seed, cold=cold,
                              groups=groups).mean())


@dataclass
class Selection:
    """What :func:`select_components` decided: the kept components and why."""

    kept: list[str]
    gains: dict[str, float]  # marginal cross-validated NDCG@10 of each component (when last tried)
    errors: dict[str, float]  # one standard error of that gain over the validation users
    cv: float  # cross-validated NDCG@10 of the kept set
    costly: tuple[str, ...] = ()

    def required(self, name: str, min_gain: float) -> float:
        """The gain ``name`` had to reach: ``min_gain``, and for a costly component also one standard error."""
        return max(min_gain, self.errors.get(name, 0.0)) if name in self.costly else min_gain


def select_components(
    results: Mapping[str, list[ScoreResult]], labels: Sequence[np.ndarray], candidates: Sequence[str],
    *, min_gain: float = 0.002, l2: float = 1.0, seed: int = 0, log: Any = None, costly: Sequence[str] = (),
    cold: Sequence[np.ndarray] | None = None, groups: Sequence[str] | None = None,
) -> Selection:
    """Backward elimination on cross-validated NDCG@10.

    The component whose removal costs least goes first, until every remaining one adds at
    least ``min_gain``. A ``costly`` component (one that runs the LLM for every request) must
    also add more than one standard error of its per-user gain: on a small validation set a
    gain within the noise does not pay for an LLM pass.
    """
    sel = Selection(kept=list(candidates), gains={}, errors={}, cv=0.0, costly=tuple(costly))
    base = cv_case_ndcg(results, labels, sel.kept, l2=l2, seed=seed, cold=cold, groups=groups)
    while len(sel.kept) > 1:
        for c in sel.kept:
            diff = base - cv_case_ndcg(results, labels, [k for k in sel.kept if k != c], l2=l2, seed=seed,
                                       cold=cold, groups=groups)
            sel.gains[c] = float(diff.mean())
            sel.errors[c] = per_user_standard_error(diff, groups)
        if log:
            log("fusion: marginal gains " + ", ".join(f"{c} {sel.gains[c]:+.4f} (± {sel.errors[c]:.4f})"
                                                       for c in sel.kept))
        weakest = min(sel.kept, key=lambda c: sel.gains[c] - sel.required(c, min_gain))
        if sel.gains[weakest] >= sel.required(weakest, min_gain):
            break
        sel.kept.remove(weakest)
        base = cv_case_ndcg(results, labels, sel.kept, l2=l2, seed=seed, cold=cold, groups=groups)
    sel.cv = float(base.mean())
    return sel


@dataclass
class HistoryTerms:
    """Whether the fit keeps the history-length terms, and why."""

    kept: bool
    gain: float  # cross-validated NDCG@10 with the terms minus without them
    error: float  # one standard error of that gain over the validation users
    min_gain: float  # the fit's min_gain: the gain had to reach it and the standard error

    def record(self) -> dict[str, Any]:
        verdict = "kept" if self.kept else "left out"
        return {"kept": self.kept, "gain": round(self.gain, 4), "standard_error": round(self.error, 4),
                "reason": f"{verdict}: with them the cross-validated NDCG@10 changes by {self.gain:+.4f}; "
                          f"{max(self.min_gain, self.error):.4f} required (min_gain {self.min_gain:.4f} and one "
                          f"standard error, {self.error:.4f})"}


def history_terms_gain(
    results: Mapping[str, list[ScoreResult]], labels: Sequence[np.ndarray], components: Sequence[str],
    short: Sequence[float], *, min_gain: float = 0.002, l2: float = 1.0, seed: int = 0,
    cold: Sequence[np.ndarray] | None = None, groups: Sequence[str] | None = None,
) -> HistoryTerms:
    """Cross-validated NDCG@10 of the fusion of ``components`` with the history-length terms against without;
    kept when the gain reaches ``min_gain`` and one standard error over the users (one more weight per
    component: below the noise, it fits the validation set, not the users)."""
    base = cv_case_ndcg(results, labels, components, l2=l2, seed=seed, cold=cold, groups=groups)
    diff = cv_case_ndcg(results, labels, components, l2=l2, seed=seed, cold=cold, groups=groups, short=short) - base
    gain, error = float(diff.mean()), per_user_standard_error(diff, groups)
    return HistoryTerms(kept=gain >= max(min_gain, error), gain=gain, error=error, min_gain=min_gain)


def per_user_standard_error(diff: np.ndarray, groups: Sequence[str] | None) -> float:
    """One standard error of the mean of per-case ``diff``, counting users (a user's warm and cold case are not
    independent)."""
    if groups is None:
        per_user = diff
    else:
        user_of = np.unique(np.asarray(groups), return_inverse=True)[1]
        per_user = np.bincount(user_of, diff) / np.bincount(user_of)
    n = len(per_user)
    return float(per_user.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
