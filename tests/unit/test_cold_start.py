"""Cold-start protocol: seeded cold items, cases that rank among cold items only, and
training data without any cold item."""

from __future__ import annotations

import json

import pytest

from llm_recommender.data import load_dataset
from llm_recommender.data.splits import (
    cold_start_cases,
    cold_start_items,
    cold_start_training,
    leave_one_out,
)
from llm_recommender.errors import InvalidRequestError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def latest_small():
    return load_dataset("ml-latest-small", cache=False)


@pytest.fixture
def tiny(tmp_path):
    """u1's sequence (by time): w0 c0 w1 c1 w2 c2 w3 w4; c* are the cold items given to the protocol."""
    items = [f"w{k}" for k in range(8)] + [f"c{k}" for k in range(6)]
    seq_u1 = ["w0", "c0", "w1", "c1", "w2", "c2", "w3", "w4"]
    rows = [{"user_id": "u1", "item_id": i, "timestamp": 100 + t} for t, i in enumerate(seq_u1)]
    # u2: nothing before its earlier cold item; u3: one cold item only
    rows += [{"user_id": "u2", "item_id": i, "timestamp": t} for t, i in enumerate(["c0", "c1", "w1", "w2"])]
    rows += [{"user_id": "u3", "item_id": i, "timestamp": t} for t, i in enumerate(["w5", "c3", "w6", "w7"])]
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "items.jsonl").write_text("".join(json.dumps({"item_id": i, "title": f"Item {i}"}) + "\n" for i in items))
    (root / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_dataset("generic", root, cache=False)


def test_cold_items_are_a_seeded_share_of_items_with_interactions(latest_small):
    used = set(latest_small.column("interactions", "item_id"))
    cold = cold_start_items(latest_small, share=0.1, seed=0)
    assert cold == cold_start_items(latest_small, share=0.1, seed=0)
    assert cold != cold_start_items(latest_small, share=0.1, seed=1)
    assert cold <= used
    assert len(cold) == round(0.1 * len(used))
    with pytest.raises(InvalidRequestError) as exc:
        cold_start_items(latest_small, share=1.0)
    assert exc.value.param == "share"


def test_targets_history_and_candidates_follow_the_rule(tiny):
    cold = frozenset(f"c{k}" for k in range(6))
    test = cold_start_cases(tiny, split="test", n_users=None, n_candidates=4, cold=cold)
    valid = cold_start_cases(tiny, split="valid", n_users=None, n_candidates=4, cold=cold)
    # u2's earlier cold item has nothing before it, u3 has one cold item: neither is eligible
    assert [c.user_id for c in test] == ["u1"] == [c.user_id for c in valid]
    t, v = test[0], valid[0]
    assert (t.target_item_id, t.target_position) == ("c2", 5)  # last cold interaction, not the last interaction
    assert (v.target_item_id, v.target_position) == ("c1", 3)
    assert t.history_ids == ["w0", "c0", "w1", "c1", "w2"]
    assert v.history_ids == ["w0", "c0", "w1"]
    for case in (t, v):
        assert set(case.candidate_ids) <= cold and len(set(case.candidate_ids)) == 4
        assert case.candidate_ids[case.ground_truth_index] == case.target_item_id
        assert case.labels == tuple(int(j == case.ground_truth_index) for j in range(4))
        assert case.protocol == "cold_start"


def test_too_few_cold_items_for_the_candidates_is_an_error(tiny):
    with pytest.raises(InvalidRequestError) as exc:
        cold_start_cases(tiny, n_candidates=7, cold=frozenset(f"c{k}" for k in range(6)))
    assert exc.value.param == "candidates"


def test_cases_are_deterministic_cold_and_strictly_before_the_target(latest_small):
    splits = leave_one_out(latest_small)
    cold = cold_start_items(latest_small, 0.1, 0)
    for split in ("valid", "test"):
        cases = cold_start_cases(latest_small, split=split, n_users=100, seed=0, splits=splits)
        again = cold_start_cases(latest_small, split=split, n_users=100, seed=0, splits=splits)
        assert [(c.user_id, c.candidate_ids, c.history_ids) for c in cases] == [
            (c.user_id, c.candidate_ids, c.history_ids) for c in again
        ]
        other = cold_start_cases(latest_small, split=split, n_users=100, seed=1, splits=splits)
        assert [c.user_id for c in other] != [c.user_id for c in cases]
        for c in cases:
            seq = splits[c.user_id].sequence
            cold_positions = [j for j, x in enumerate(seq) if x.item_id in cold]
            assert c.target_position == (cold_positions[-1] if split == "test" else cold_positions[-2])
            assert seq[c.target_position].item_id == c.target_item_id
            assert len(c.candidate_ids) == 20 and set(c.candidate_ids) <= cold
            expected = seq[max(0, c.target_position - 50) : c.target_position]
            assert c.history_ids == [x.item_id for x in expected] and c.history_ids
            assert all(h.timestamp <= c.target_timestamp for h in c.request.history)
    test_users = [c.user_id for c in cold_start_cases(latest_small, split="test", n_users=100, splits=splits)]
    valid_users = [c.user_id for c in cold_start_cases(latest_small, split="valid", n_users=100, splits=splits)]
    assert test_users == valid_users


def test_training_has_no_cold_item_and_no_target(latest_small):
    splits = leave_one_out(latest_small)
    cold = cold_start_items(latest_small, 0.1, 0)
    for split in ("valid", "test"):
        train = cold_start_training(splits, cold, split)
        assert train and not {x.item_id for _, x in train} & cold
        cases = cold_start_cases(latest_small, split=split, n_users=100, splits=splits, cold=cold)
        rows = {(u, x.row) for u, x in train}
        assert not rows & {(c.user_id, splits[c.user_id].sequence[c.target_position].row) for c in cases}
        # everything else of the leave-one-out training part is kept
        kept = sum(1 for s in splits.values() for x in s.before(split) if x.item_id not in cold)
        assert len(train) == kept
