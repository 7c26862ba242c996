"""History-length terms of the fusion (issue 28, item 6): a two-item history may want other component weights
than a fifty-item one; the fit keeps the terms only for their cross-validated gain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_recommender.protocol import HistoryEntry, Item, RankRequest
from llm_recommender.scorers.base import ScoreResult
from llm_recommender.scorers.fused import Fusion, history_terms_gain, request_shortness, shortness

K = 20


def _result(s: np.ndarray) -> ScoreResult:
    return ScoreResult(scores=s, probabilities=1 / (1 + np.exp(-s)), history_used=1)


def _cases(n: int = 400, seed: int = 5, depends_on_length: bool = True):
    """``short_expert`` finds the target in short-history cases only, ``long_expert`` in long ones (or, with
    ``depends_on_length`` False, each finds it in a random half of the cases, whatever the length)."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, K, size=n)
    lengths = np.where(np.arange(n) % 2 == 0, 2, 40)
    knows = lengths == 2 if depends_on_length else rng.random(n) < 0.5
    short_expert = [_result(2.0 * k * np.eye(K)[g] + rng.normal(size=K)) for g, k in zip(gt, knows)]
    long_expert = [_result(2.0 * (not k) * np.eye(K)[g] + rng.normal(size=K)) for g, k in zip(gt, knows)]
    labels = [np.eye(K)[g] for g in gt]
    return {"short_expert": short_expert, "long_expert": long_expert}, labels, [shortness(int(h)) for h in lengths]


def test_shortness_falls_with_the_history_length():
    assert shortness(0) == 1.0 and shortness(3) == 0.5
    assert shortness(2) > shortness(10) > shortness(50) > 0
    seen = [HistoryEntry(id=f"h{i}", title=f"Film {i}") for i in range(3)]
    reqs = [RankRequest(history=seen[:n], candidates=[Item(id="c", title="Another film")]) for n in (0, 3)]
    assert request_shortness(reqs) == [1.0, 0.5]


def test_history_terms_are_kept_when_the_best_component_depends_on_the_history_length():
    results, labels, short = _cases()
    terms = history_terms_gain(results, labels, ["short_expert", "long_expert"], short)
    assert terms.kept and terms.gain > 0.05 and terms.gain > 3 * terms.error, terms
    record = terms.record()
    assert record["kept"] and record["reason"].startswith("kept: with them the cross-validated NDCG@10 changes by +")


def test_history_terms_are_left_out_when_the_length_says_nothing():
    results, labels, short = _cases(depends_on_length=False)
    terms = history_terms_gain(results, labels, ["short_expert", "long_expert"], short)
    # here the extra terms fit noise: a gain above min_gain (0.002) but within one standard error
    assert not terms.kept and terms.gain < terms.error, terms
    assert terms.record()["reason"].startswith("left out: ")


def test_a_fusion_with_history_terms_weights_components_by_length_and_round_trips(tmp_path):
    results, labels, short = _cases()
    comps = ["short_expert", "long_expert"]
    fusion = Fusion.fit(results, labels, comps, short=short)
    assert fusion.history_terms
    coef = fusion.coefficients()
    # the short-history expert gains weight as the history shortens, the long one loses it
    assert coef["short_expert:short"][0] > 0 > coef["long_expert:short"][0], coef
    fusion.save(tmp_path)
    assert json.loads((tmp_path / "fusion.json").read_text())["history_terms"] is True
    again = Fusion.load(tmp_path)
    a, b = fusion.combine(results, short=short), again.combine(results, short=short)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.scores, y.scores)
        assert set(x.details["contributions"]) == set(comps)  # the terms belong to their components
    with pytest.raises(ValueError, match="shortness"):
        fusion.combine(results)
    plain = Fusion.fit(results, labels, comps)
    plain.save(tmp_path)
    assert "history_terms" not in json.loads((tmp_path / "fusion.json").read_text())
    assert not Fusion.load(tmp_path).history_terms
