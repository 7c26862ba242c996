"""A case-aware fusion (issue 28, item 6): with cold items kept out of training, the fusion is also fitted on
cold validation cases and knows which candidates are cold, so cold candidates get probabilities of their own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_recommender.bundle import Bundle, FitConfig, fit_bundle, read_manifest
from llm_recommender.data import load_dataset
from llm_recommender.data.splits import cold_start_cases, cold_start_items
from llm_recommender.scorers.fused import cold_flags
from tests.synthetic import hash_encoder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("case-fusion")
    ds = load_dataset("ml-latest-small", cache=False)
    cold = sorted(cold_start_items(ds, 0.1, 0))

    def fit(case: bool):  # valid_users: the default, more than the users with cold items
        cfg = FitConfig(dataset="ml-latest-small", components=["popularity", "embedding"],
                        cold_items=cold, case_fusion=case, min_gain=-1.0, progress=False)
        return fit_bundle(cfg, root / f"case-{case}", text_encoder=hash_encoder, log=lambda m: None)

    return ds, cold, fit(True), fit(False)


def expected_positives_per_case(bundle: Bundle, requests) -> float:
    """Sum of P(u, i) over each request's candidates, averaged: 1.0 when calibrated (one target per case)."""
    return float(np.mean([r.probabilities.sum() for r in bundle.fused.score_many(requests)]))


def test_cold_candidates_get_calibrated_probabilities_only_from_the_case_aware_fusion(fitted):
    ds, cold, aware_dir, plain_dir = fitted
    test = cold_start_cases(ds, split="test", n_users=200, cold=frozenset(cold))
    requests = [c.request for c in test]
    aware = expected_positives_per_case(Bundle.load(aware_dir), requests)
    plain = expected_positives_per_case(Bundle.load(plain_dir), requests)
    # the warm-only fusion reads "no popularity" as "unlikely": it expects far less than the one target per case
    assert abs(aware - 1.0) < 0.3, aware
    assert abs(plain - 1.0) > abs(aware - 1.0) + 0.2, (plain, aware)


def test_the_case_aware_bundle_records_its_cold_cases_and_round_trips(fitted):
    ds, cold, aware_dir, plain_dir = fitted
    manifest = read_manifest(aware_dir)
    assert manifest.validation["case_aware_fusion"] and manifest.validation["cold_users"] > 20
    assert all("cold_ndcg@10" in c.validation for c in manifest.components)
    untrained = json.loads((aware_dir / "fusion.json").read_text())["untrained"]
    bundle = Bundle.load(aware_dir)
    assert {bundle.space.index[i] for i in cold} <= set(untrained)  # every cold item is flagged cold
    assert "untrained" not in json.loads((plain_dir / "fusion.json").read_text())
    assert "case_aware_fusion" not in read_manifest(plain_dir).validation
    requests = [c.request for c in cold_start_cases(ds, split="test", n_users=20, cold=frozenset(cold))]
    a, b = bundle.fused.score_many(requests), Bundle.load(aware_dir).fused.score_many(requests)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.scores, y.scores)
        assert set(x.details["contributions"]) == {"popularity", "embedding"}  # the cold flag is no component


def test_unknown_items_are_cold_and_trained_ones_are_not():
    np.testing.assert_array_equal(cold_flags([3, 7], np.array([-1, 3, 5, 7, 0])), [1.0, 1.0, 0.0, 1.0, 0.0])


def test_a_users_warm_and_cold_cases_share_a_cross_validation_fold(monkeypatch):
    import llm_recommender.scorers.fused as fused
    from llm_recommender.scorers.base import ScoreResult

    rng = np.random.default_rng(0)
    n = 40
    results = {"a": [ScoreResult(scores=rng.normal(size=5), probabilities=np.full(5, 0.5), history_used=3)
                     for _ in range(n)]}
    labels = [np.eye(5)[k % 5] for k in range(n)]
    groups = [f"u{k // 2}" for k in range(n)]  # cases 2k and 2k + 1 are one user's (a warm and a cold case)
    folds: list[set[int]] = []
    real_fit = fused.Fusion.fit

    def spy(results, labels, components, **kw):  # records which cases each fold trains on
        folds.append(set(kw["rows"]))
        return real_fit(results, labels, components, **kw)

    monkeypatch.setattr(fused.Fusion, "fit", spy)
    fused.cv_case_ndcg(results, labels, ["a"], groups=groups)
    assert len(folds) == 5
    for train in folds:
        assert all((2 * u in train) == (2 * u + 1 in train) for u in range(n // 2))
    folds.clear()
    fused.cv_case_ndcg(results, labels, ["a"])  # without groups each case is its own user: some pairs split
    assert any((2 * u in train) != (2 * u + 1 in train) for train in folds for u in range(n // 2))
