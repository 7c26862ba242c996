"""The hybrid scorer: component scorers -> a FeatureSet per request -> the feature model.

Features per (user, candidate), one row per candidate (:func:`hybrid_features`):

* ``<component>``: each component's raw score (e.g. ``verbalizer``, ``embedding``,
  ``popularity``, ``cooccurrence``), and with ``probabilities=True`` also
  ``<component>.probability``;
* with ``vectors`` set, representation features from the component whose results
  carry ``details["user_vector"]`` / ``details["item_vectors"]`` (the embedding
  baseline with ``return_vectors=True``): ``"concat"`` adds ``h_u`` and ``h_i`` (the
  seed's sigmoid(theta^T [h_u; h_i])), ``"product"`` adds ``h_u*h_i`` (a learned,
  weighted similarity: this one changes the ranking within a request, ``h_u`` alone
  cannot), ``"both"`` adds all three.

Fit on validation requests only, apply to test::

    comps = {"verbalizer": llm_scorer, "embedding": EmbeddingScorer(return_vectors=True), "popularity": pop}
    hybrid = HybridScorer.fit(comps, val_requests, val_labels, cutoffs=val_cutoffs, vectors="product")
    hybrid.calibrator.save(out / "hybrid.json")
    test_results = hybrid.score_many(test_requests, cutoffs=test_cutoffs)

Runners that cache component outputs call :func:`hybrid_features` and
``FeatureLogisticCalibrator.fit`` / :meth:`HybridScorer.combine` directly instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import RankRequest
from ..scorers.base import Scorer, ScoreResult
from .features import FeatureSet
from .logistic import FeatureLogisticCalibrator

VECTOR_MODES = (None, "concat", "product", "both")


def hybrid_features(
    results: Mapping[str, ScoreResult], *, probabilities: bool = False, vectors: str | None = None
) -> FeatureSet:
    """One request's features from its component results (all aligned with its candidates)."""
    if vectors not in VECTOR_MODES:
        raise InvalidRequestError(f"vectors must be one of {VECTOR_MODES}, got {vectors!r}", param="vectors")
    fs = FeatureSet()
    for name, res in results.items():
        fs.add(name, res.scores)
        if probabilities:
            fs.add(f"{name}.probability", res.probabilities)
    if vectors is not None:
        source = next((r for r in results.values() if "user_vector" in r.details and "item_vectors" in r.details), None)
        if source is None:
            raise InvalidRequestError(
                "vector features need a component with user/item vectors (EmbeddingScorer(return_vectors=True))",
                param="features.h_u",
            )
        h_u = np.asarray(source.details["user_vector"], dtype=float)
        h_i = np.asarray(source.details["item_vectors"], dtype=float)
        if vectors in ("concat", "both"):
            fs.add("h_u", np.broadcast_to(h_u, h_i.shape))
            fs.add("h_i", h_i)
        if vectors in ("product", "both"):
            fs.add("h_u*h_i", h_i * h_u[None, :])
    return fs


def _score_component(scorer: Scorer, requests: list[RankRequest], cutoffs: Sequence[Any] | None) -> list[ScoreResult]:
    if cutoffs is not None and "cutoffs" in inspect.signature(scorer.score_many).parameters:
        return scorer.score_many(requests, cutoffs=cutoffs)  # type: ignore[call-arg]
    return scorer.score_many(requests)


class HybridScorer(Scorer):
    """A ``Scorer`` whose score is the feature model's logit over its components' outputs."""

    name = "hybrid"

    def __init__(
        self,
        components: Mapping[str, Scorer],
        calibrator: FeatureLogisticCalibrator,
        *,
        probabilities: bool = False,
        vectors: str | None = None,
    ) -> None:
        if not components:
            raise InvalidRequestError("a hybrid needs at least one component scorer", param="components")
        self.components = dict(components)
        self.calibrator = calibrator
        self.probabilities = probabilities
        self.vectors = vectors

    def component_results(
        self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None
    ) -> dict[str, list[ScoreResult]]:
        return {name: _score_component(s, requests, cutoffs) for name, s in self.components.items()}

    def features(self, component_results: Mapping[str, list[ScoreResult]]) -> list[FeatureSet]:
        n = {len(v) for v in component_results.values()}
        if len(n) != 1:
            raise InvalidRequestError("component results cover different numbers of requests", param="components")
        return [
            hybrid_features(
                {name: res[k] for name, res in component_results.items()},
                probabilities=self.probabilities,
                vectors=self.vectors,
            )
            for k in range(n.pop())
        ]

    def combine(self, component_results: Mapping[str, list[ScoreResult]]) -> list[ScoreResult]:
        """Hybrid results from precomputed (e.g. cached) component results."""
        out = []
        for k, fs in enumerate(self.features(component_results)):
            logit = self.calibrator.decision_function(fs)
            parts = {name: res[k] for name, res in component_results.items()}
            out.append(
                ScoreResult(
                    scores=logit,
                    probabilities=1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))),
                    history_used=max(r.history_used for r in parts.values()),
                    fallbacks=[f for r in parts.values() for f in r.fallbacks],
                    notes=[f"{name}: {note}" for name, r in parts.items() for note in r.notes],
                    details={"components": {name: np.asarray(r.scores).tolist() for name, r in parts.items()}},
                )
            )
        return out

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        return self.combine(self.component_results(requests, cutoffs))

    @classmethod
    def fit(
        cls,
        components: Mapping[str, Scorer],
        requests: list[RankRequest],
        labels: Sequence[Any],
        *,
        cutoffs: Sequence[Any] | None = None,
        probabilities: bool = False,
        vectors: str | None = None,
        l2: float = 1.0,
    ) -> HybridScorer:
        """Score the *validation* ``requests`` with every component and fit the feature model on ``labels``."""
        if len(labels) != len(requests):
            raise InvalidRequestError(f"{len(labels)} label lists for {len(requests)} requests", param="labels")
        shell = cls(
            components,
            FeatureLogisticCalibrator([{"name": "_", "theta": [0.0]}]),
            probabilities=probabilities,
            vectors=vectors,
        )
        feats = shell.features(shell.component_results(requests, cutoffs))
        y = np.concatenate([np.asarray(lab, dtype=float).reshape(-1) for lab in labels])
        shell.calibrator = FeatureLogisticCalibrator.fit(FeatureSet.concat(feats), y, l2=l2)
        return shell
