"""Protocols: leave-one-out splits, LLMRank candidate sets, pointwise cases, position variants,
and the no-leakage guarantees."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from llm_recommender.data import load_dataset
from llm_recommender.data.splits import (
    leave_one_out,
    llmrank_cases,
    pointwise_cases,
    position_variants,
    training_interactions,
)
from llm_recommender.errors import InvalidRequestError
from llm_recommender.metrics import expected_random, ndcg_at, ranking_metrics, target_rank
from llm_recommender.protocol import parse_request
from tests.shared_data import shared_data_dir


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))


def _generic(tmp_path, inter_rows, n_items=30, name="g"):
    root = tmp_path / name
    root.mkdir()
    (root / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": f"i{k}", "title": f"Item {k}"}) + "\n" for k in range(n_items))
    )
    (root / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inter_rows))
    return load_dataset("generic", root, cache=False)


@pytest.fixture
def tiny(tmp_path):
    rows = []
    # u1: 60 interactions, t = 1000..1059 (written newest first to prove sorting by time)
    rows += [
        {"user_id": "u1", "item_id": f"i{k % 30}", "timestamp": 1000 + k, "rating": 1 + k % 5}
        for k in reversed(range(60))
    ]
    # u2: a tie at t=5: file order decides (i3 before i4), so i4 is the test target
    rows += [
        {"user_id": "u2", "item_id": i, "timestamp": t, "rating": r}
        for i, t, r in [("i1", 1, 5), ("i2", 2, 2), ("i3", 5, 4), ("i4", 5, 1)]
    ]
    rows += [
        {"user_id": "u3", "item_id": "i1", "timestamp": 3, "rating": 4},
        {"user_id": "u3", "item_id": "i2", "timestamp": 4, "rating": 4},
    ]
    rows += [
        {"user_id": f"v{n}", "item_id": f"i{(n + k) % 30}", "timestamp": 10 * k + n, "rating": 3 + (n + k) % 3}
        for n in range(10)
        for k in range(5)
    ]
    return _generic(tmp_path, rows)


@pytest.fixture(scope="module")
def latest_small():
    return load_dataset("ml-latest-small", cache=False)


def test_leave_one_out_targets_and_history(tiny):
    splits = leave_one_out(tiny)
    assert "u3" not in splits  # 2 interactions: no history for a validation target
    u1 = splits["u1"]
    assert [x.timestamp for x in u1.sequence] == list(range(1000, 1060))
    assert u1.target("test").timestamp == 1059 and u1.target("valid").timestamp == 1058
    hist = u1.history("test")
    assert len(hist) == 50 and hist[0].timestamp == 1009 and hist[-1].timestamp == 1058  # includes the valid target
    assert [x.timestamp for x in u1.history("valid")] == list(range(1008, 1058))
    u2 = splits["u2"]
    assert (u2.target("test").item_id, u2.target("valid").item_id) == ("i4", "i3")
    assert [x.item_id for x in u2.history("valid")] == ["i1", "i2"]
    with pytest.raises(InvalidRequestError):
        u2.target("train")  # type: ignore[arg-type]


def test_llmrank_candidates(tiny):
    cases = llmrank_cases(tiny, n_users=5, n_candidates=8, seed=3)
    assert len(cases) == 5 and len({c.user_id for c in cases}) == 5
    for c in cases:
        ids = c.candidate_ids
        assert len(ids) == 8 == len(set(ids)) and c.request.top_k == 8
        assert ids[c.ground_truth_index] == c.target_item_id and ids.count(c.target_item_id) == 1
        assert c.labels == tuple(int(j == c.ground_truth_index) for j in range(8))
        assert c.protocol == "llmrank" and c.split == "test"
        parse_request(c.request)  # a valid protocol request (no duplicate ids)
    # determinism: same seed -> identical cases; another seed -> different ones
    assert llmrank_cases(tiny, n_users=5, n_candidates=8, seed=3) == cases
    assert llmrank_cases(tiny, n_users=5, n_candidates=8, seed=4) != cases
    # valid and test share the users for a seed; a user's candidates do not depend on the others sampled
    valid = llmrank_cases(tiny, split="valid", n_users=5, n_candidates=8, seed=3)
    assert [c.user_id for c in valid] == [c.user_id for c in cases]
    alone = llmrank_cases(tiny, users=[cases[2].user_id], n_candidates=8, seed=3)
    assert alone[0].candidate_ids == cases[2].candidate_ids


def test_llmrank_negatives_may_come_from_history(tiny):
    # The published protocol draws negatives from all items: u1 has seen all 30, so all 19 are seen ones.
    case = llmrank_cases(tiny, users=["u1"], n_candidates=20, seed=0)[0]
    seen = {x.item_id for x in leave_one_out(tiny)["u1"].before("test")}
    assert len((set(case.candidate_ids) - {case.target_item_id}) & seen) == 19


def test_llmrank_exclude_history_pool(tiny, latest_small):
    with pytest.raises(InvalidRequestError, match="possible negatives"):
        llmrank_cases(tiny, users=["u1"], n_candidates=20, seed=0, exclude_history=True)
    splits = leave_one_out(latest_small)
    cases = llmrank_cases(latest_small, n_users=50, seed=0, exclude_history=True, splits=splits)
    for c in cases:
        seen = {x.item_id for x in splits[c.user_id].before("test")}
        negatives = set(c.candidate_ids) - {c.target_item_id}
        assert not negatives & seen


def test_errors(tiny):
    with pytest.raises(InvalidRequestError, match="n_users must be between 1 and the 12 eligible"):
        llmrank_cases(tiny, n_users=13)
    with pytest.raises(InvalidRequestError, match="not eligible"):
        llmrank_cases(tiny, users=["u3"])


def test_pointwise_cases(tiny):
    cases = pointwise_cases(tiny, n_users=None, seed=0)
    by_user = {c.user_id: c for c in cases}
    assert by_user["u2"].labels == (0,) and by_user["u2"].target_rating == 1.0  # rating 1 -> dislike
    assert by_user["u1"].labels == (int(1 + 59 % 5 > 3),)
    for c in cases:
        assert c.candidate_ids == [c.target_item_id] and c.ground_truth_index == 0
        assert c.labels[0] == int(c.target_rating > 3)


def test_pointwise_needs_ratings(tmp_path):
    ds = _generic(tmp_path, [{"user_id": "a", "item_id": f"i{k}"} for k in range(4)], name="norating")
    with pytest.raises(InvalidRequestError, match="has no ratings"):
        pointwise_cases(ds)


def test_position_variants(tiny):
    case = llmrank_cases(tiny, n_users=1, n_candidates=6, seed=1)[0]
    variants = position_variants(case)
    others = [i for j, i in enumerate(case.candidate_ids) if j != case.ground_truth_index]
    assert len(variants) == 6
    for p, v in enumerate(variants):
        assert v.ground_truth_index == p and v.candidate_ids[p] == case.target_item_id
        assert [i for j, i in enumerate(v.candidate_ids) if j != p] == others  # relative order kept
        assert v.labels == tuple(int(j == p) for j in range(6))
        assert v.request.history == case.request.history
    # a scorer that always prefers the first slot, averaged over positions, is exactly random
    ranks = [target_rank(-np.arange(6.0), v.ground_truth_index) for v in variants]
    assert ranking_metrics(ranks) == expected_random(6)


def test_no_leakage(latest_small):
    """No target, and nothing after it, reaches a case's history."""
    splits = leave_one_out(latest_small)
    for split in ("valid", "test"):
        cases = llmrank_cases(latest_small, split=split, n_users=300, seed=0, splits=splits)
        for c in cases:
            seq = splits[c.user_id].sequence
            assert seq[c.target_position].item_id == c.target_item_id
            expected = seq[max(0, c.target_position - 50) : c.target_position]
            assert [(h.id, h.timestamp) for h in c.request.history] == [(x.item_id, x.timestamp) for x in expected]
            assert all(h.timestamp <= c.target_timestamp for h in c.request.history)
            later = {x.row for x in seq[c.target_position :]}
            assert not later & {x.row for x in expected}
    # training data for test: no user's test target
    train = training_interactions(splits, "test")
    targets = {(u, s.target("test").row) for u, s in splits.items()}
    assert not targets & {(u, x.row) for u, x in train}


def test_gt_position_spread(latest_small):
    cases = llmrank_cases(latest_small, n_users=400, seed=0)
    positions = Counter(c.ground_truth_index for c in cases)
    assert set(positions) == set(range(20))  # shuffled: every slot used
    assert max(positions.values()) < 45  # 20 expected per slot


def test_random_ndcg_on_ml100k_matches_llmrank():
    ds = load_dataset("ml-100k", shared_data_dir("ml-100k", "u.data"), cache=False)
    cases = llmrank_cases(ds, n_users=200, seed=0)
    assert len(cases) == 200 and all(len(c.candidate_ids) == 20 for c in cases)
    assert all(1 <= len(c.request.history) <= 50 for c in cases)
    rng = np.random.default_rng(0)
    ndcg10 = np.mean([ndcg_at(target_rank(rng.random(20), c.ground_truth_index), 10) for c in cases])
    assert abs(expected_random(20)["ndcg@10"] - 0.2272) < 1e-4
    assert 0.17 < ndcg10 < 0.29
