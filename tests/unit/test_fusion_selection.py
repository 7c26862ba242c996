"""Component selection: a costly (LLM) component must add more than the noise of the validation set."""

from __future__ import annotations

import numpy as np

from llm_recommender.scorers.base import ScoreResult
from llm_recommender.scorers.fused import cv_case_ndcg, cv_ndcg, select_components


def _cases(n: int = 120, k: int = 20, seed: int = 3):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, k, size=n)
    labels = [np.eye(k)[g] for g in gt]

    def result(s: np.ndarray) -> ScoreResult:
        return ScoreResult(scores=s, probabilities=1 / (1 + np.exp(-s)), history_used=1)

    strong = [result(1.5 * np.eye(k)[g] + rng.normal(size=k)) for g in gt]  # informative
    noise = [result(rng.normal(size=k)) for _ in gt]  # knows nothing
    return {"strong": strong, "noise": noise}, labels


def test_cv_ndcg_is_the_mean_of_the_per_case_values():
    results, labels = _cases()
    per_case = cv_case_ndcg(results, labels, ["strong", "noise"])
    assert per_case.shape == (len(labels),) and ((per_case >= 0) & (per_case <= 1)).all()
    assert cv_ndcg(results, labels, ["strong", "noise"]) == float(per_case.mean())


def test_a_costly_component_within_the_noise_is_dropped_a_cheap_one_is_not():
    results, labels = _cases()
    # min_gain below any possible loss: a cheap component is always kept, so only the noise rule can drop one
    cheap = select_components(results, labels, ["strong", "noise"], min_gain=-1.0)
    assert cheap.kept == ["strong", "noise"]
    costly = select_components(results, labels, ["strong", "noise"], min_gain=-1.0, costly=["noise"])
    assert costly.kept == ["strong"]
    assert costly.gains["noise"] < costly.errors["noise"]  # why: its gain was within one standard error
    assert costly.required("noise", -1.0) == costly.errors["noise"] > 0
    assert costly.required("strong", -1.0) == -1.0  # cheap components keep the plain threshold
    assert abs(costly.cv - cv_ndcg(results, labels, ["strong"])) < 1e-12


def test_a_costly_component_that_carries_the_ranking_stays():
    results, labels = _cases()
    sel = select_components(results, labels, ["strong", "noise"], costly=["strong"])
    assert "strong" in sel.kept and sel.gains["strong"] > sel.errors["strong"]
