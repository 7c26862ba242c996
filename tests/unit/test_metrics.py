"""Metrics against small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llm_recommender.metrics import (
    auc,
    brier,
    ece,
    expected_random,
    hit_at,
    log_loss,
    ndcg_at,
    probability_metrics,
    ranking_metrics,
    reciprocal_rank,
    reliability_bins,
    target_rank,
)


def test_target_rank_and_ties():
    scores = [0.1, 0.9, 0.5, 0.5, 0.2]
    assert target_rank(scores, 1) == 1
    assert target_rank(scores, 0) == 5
    # gt at index 3 ties with index 2: pessimistic puts it after; "order" uses candidate position
    assert target_rank(scores, 3) == 3 and target_rank(scores, 3, ties="order") == 3
    assert target_rank(scores, 2) == 3 and target_rank(scores, 2, ties="order") == 2
    # a constant scorer never gets credit by default
    assert target_rank([0.0] * 20, 0) == 20 and target_rank([0.0] * 20, 0, ties="order") == 1
    # NaN is the lowest score
    assert target_rank([float("nan"), 0.3, 0.1], 0) == 3 and target_rank([float("nan"), 0.3, 0.1], 2) == 2
    # an explicit ranking wins over the scores; a missing ground truth ranks last
    assert target_rank([0.0, 0.0, 0.0], 2, order=[2, 0, 1]) == 1
    assert target_rank([0.0, 0.0, 0.0], 2, order=[0, 1]) == 3
    with pytest.raises(IndexError):
        target_rank([0.1], 1)
    with pytest.raises(ValueError):
        target_rank([0.1], 0, ties="best")  # type: ignore[arg-type]


def test_rank_metrics_by_hand():
    assert ndcg_at(1, 10) == 1.0
    assert ndcg_at(3, 10) == pytest.approx(0.5)  # 1/log2(4)
    assert ndcg_at(2, 1) == 0.0 and ndcg_at(10, 10) == pytest.approx(1 / math.log2(11)) and ndcg_at(11, 10) == 0.0
    assert hit_at(5, 5) == 1.0 and hit_at(6, 5) == 0.0
    assert reciprocal_rank(4) == 0.25
    m = ranking_metrics([1, 3, 7])
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)  # 1/log2(8) = 1/3
    assert m["hr@1"] == pytest.approx(1 / 3) and m["hr@5"] == pytest.approx(2 / 3) and m["hr@10"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 3)
    assert set(m) == {"ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hr@1", "hr@5", "hr@10", "mrr"}


def test_expected_random_is_llmrank_baseline():
    exp = expected_random(20)
    by_hand = sum(1 / math.log2(r + 1) for r in range(1, 11)) / 20
    assert exp["ndcg@10"] == pytest.approx(by_hand) and round(exp["ndcg@10"], 3) == 0.227
    assert exp["hr@10"] == 0.5 and exp["hr@1"] == 0.05
    assert exp["mrr"] == pytest.approx(sum(1 / r for r in range(1, 21)) / 20)


def test_auc_by_hand():
    # positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert auc([1, 1, 0, 0], [0.8, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # ties count one half
    assert auc([1, 0, 0], [0.5, 0.5, 0.2]) == pytest.approx(0.75)
    assert auc([0, 1], [0.9, 0.1]) == 0.0
    assert math.isnan(auc([1, 1], [0.2, 0.3]))


def test_log_loss_and_brier_by_hand():
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert brier([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))  # clipped, finite
    with pytest.raises(ValueError):
        brier([1, 2], [0.5, 0.5])
    with pytest.raises(ValueError):
        brier([1], [1.5])
    with pytest.raises(ValueError):
        brier([1, 0], [0.5])


def test_ece_by_hand():
    # 15 bins of width 1/15: 0.05 -> bin 0, 0.95 -> bin 14, 0.5 -> bin 7
    labels = [0, 0, 1, 1, 1, 0]
    probs = [0.05, 0.05, 0.95, 0.95, 0.5, 0.5]
    # bin 0: mean p .05, acc 0 -> .05 ; bin 14: .95 vs 1 -> .05 ; bin 7: .5 vs .5 -> 0
    assert ece(labels, probs) == pytest.approx((2 * 0.05 + 2 * 0.05 + 0) / 6)
    assert ece([1, 0], [1.0, 0.0]) == 0.0  # 1.0 falls in the last bin
    assert ece([1, 1, 0, 0], [0.6, 0.6, 0.6, 0.6]) == pytest.approx(0.1)


def test_reliability_bins():
    bins = reliability_bins([0, 1, 1], [0.0, 1.0, 0.99])
    assert len(bins) == 15 and bins[0].lower == 0.0 and bins[-1].upper == 1.0
    assert bins[0].count == 1 and bins[0].fraction_positive == 0.0
    assert bins[14].count == 2 and bins[14].mean_predicted == pytest.approx(0.995) and bins[14].fraction_positive == 1.0
    assert bins[7].count == 0 and bins[7].mean_predicted is None
    assert bins[14].to_dict()["count"] == 2
    assert len(reliability_bins([1], [0.3], n_bins=10)) == 10


def test_probability_metrics_agree_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    got = probability_metrics(y, p)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, p))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, p))
    assert got["brier"] == pytest.approx(sk.brier_score_loss(y, p))
    assert 0 <= got["ece"] <= 1
