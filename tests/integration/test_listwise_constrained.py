"""Permutation-constrained listwise decoding through the real transformers backend.

The tiny random model writes garbage when left alone (its schema-shaped JSON repeats
ids); constrained, every ranking must be a permutation, for full, top-k and label keys.
The default model must rank a few real requests with no fallback.
(The vLLM engine and server are covered in test_vllm_tiny.py, which already starts them.)
"""

from __future__ import annotations

import pytest

from llm_recommender import Recommender
from llm_recommender.protocol import parse_request
from tests.vllm_support import fixed_requests

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return Recommender(backend="transformers", model=str(tiny_model_dir), threads=1, listwise_max_tokens=120)


def _score(rec, requests, **settings):
    scorer = type(rec.scorer("listwise"))(rec.backend, rec.renderer, rec.config_for("listwise", **settings))
    return scorer.score_many([parse_request(r) for r in requests])


def assert_valid(results, requests, k=None):
    for result, request in zip(results, requests):
        n = len(request["candidates"])
        assert result.details["decoding"] == "constrained" and not result.details["fallback"]
        assert result.details["attempts"] == [a for a in result.details["attempts"] if a["ok"]]
        assert sorted(result.ranking()) == list(range(n))
        assert result.details["ranked"] == (k or n)


def test_tiny_random_model_is_garbage_unconstrained(tiny):
    requests = fixed_requests(3, n_candidates=6)
    results = _score(tiny, requests, listwise_decoding="validated", listwise_retries=0)
    assert all(r.details["decoding"] == "validated" for r in results)
    assert any(r.details["fallback"] for r in results)  # what the constrained tests below must overcome


@pytest.mark.parametrize("settings", [{}, {"listwise_top_k": 3}, {"listwise_keys": "labels"},
                                      {"listwise_keys": "labels", "listwise_top_k": 2}])
def test_tiny_random_model_constrained_gives_valid_rankings(tiny, settings):
    requests = fixed_requests(3, n_candidates=6)
    assert_valid(_score(tiny, requests, **settings), requests, settings.get("listwise_top_k"))


def test_default_model_ranks_without_fallback(default_model_dir):
    rec = Recommender(backend="transformers", threads=1)
    requests = fixed_requests(2, n_candidates=8, history=10)
    responses = rec.rank_many([{**r, "strategy": "listwise"} for r in requests])
    assert not any(resp.fallback_used for resp in responses)
    for resp, request in zip(responses, requests):
        assert sorted(i.id for i in resp.items) == sorted(c["id"] for c in request["candidates"])
    assert_valid(_score(rec, requests), requests)
