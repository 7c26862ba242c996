"""The eval cache key comes from the JSON of the configs that affect the scores: runs that differ
only in an unrelated setting share the cache, a changed scorer or prompt option is a miss."""

from __future__ import annotations

import pytest

from llm_recommender.data.splits import EvalCase
from llm_recommender.evaluation.scoring import LLMCaseScorer, cache_signature
from llm_recommender.recommender import Recommender
from llm_recommender.testing import FakeBackend, hashed_score_fn, sample_requests


def cases() -> list[EvalCase]:
    return [EvalCase(user_id=str(i), split="test", protocol="llmrank", target_item_id=r.candidates[0].id,
                     target_timestamp=0, target_position=0, request=r, ground_truth_index=0,
                     labels=(1, *[0] * (len(r.candidates) - 1)))
            for i, r in enumerate(sample_requests())]


def signature(strategy: str, **settings) -> dict:
    rec = Recommender(backend=FakeBackend(score_fn=hashed_score_fn), **settings)
    return cache_signature(strategy, rec.model_name, rec.scorer(strategy))


@pytest.mark.parametrize("strategy", ["verbalizer", "pointwise", "listwise"])
def test_unrelated_settings_share_the_key(strategy):
    base = signature(strategy)
    assert signature(strategy, retrieve_candidates=7, reason_max_chars=50, threads=1, vllm_kv_cache_gib=3,
                     request_timeout=5.0, calibrators={}) == base
    other = {"verbalizer": {"pointwise_prefix_reuse": False}, "pointwise": {"listwise_keys": "labels"},
             "listwise": {"pointwise_prefix_reuse": False}}[strategy]
    assert signature(strategy, **other) == base  # another strategy's option


@pytest.mark.parametrize(("strategy", "change"), [
    ("verbalizer", {"permutations": 2}), ("verbalizer", {"label_prior": True}),
    ("pointwise", {"pointwise_prefix_reuse": False}), ("listwise", {"listwise": {"keys": "ids"}}),
    ("listwise", {"listwise": {"verbalizer": {"permutations": 2}}}), ("verbalizer", {"max_history": 3}),
    ("pointwise", {"prompt": {"max_title_chars": 20}}),
])
def test_a_changed_option_changes_the_key(strategy, change):
    assert signature(strategy, **change) != signature(strategy)


def test_the_cache_is_shared_and_invalidated_end_to_end(tmp_path):
    def run(**settings) -> int:
        rec = Recommender(backend=FakeBackend(score_fn=hashed_score_fn), **settings)
        scorer = LLMCaseScorer(rec, tmp_path, batch_size=4, stop_after=None, progress=False, log=lambda _: None)
        scorer.score("verbalizer", cases())
        return scorer.new_requests

    n = len(cases())
    assert run() == n
    assert run(reason_max_tokens=30, listwise_keys="labels") == 0  # unrelated: every case from the cache
    assert run(permutations=3) == n  # a changed scorer option: scored again
    assert run(permutations=3, threads=1) == 0
