"""Position-bias removal in the verbalizer, checked against hand-computed numbers with the fake backend.

The fake "model" has a label bias (it likes label A three times as much as any other)
and, optionally, a content preference (twice as much for the label next to Heat).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.protocol import parse_request
from llm_recommender.scorers.llm.verbalizer import _PRIORS, cyclic_orders


def biased(content: str | None = None):
    def score_fn(prompt: str, token: str) -> float:
        logit = math.log(3.0) if token == "A" else 0.0
        if content and re.search(rf'^{token}\. "{re.escape(content)}"', prompt, re.MULTILINE):
            logit += math.log(2.0)
        return logit
    return score_fn


def verbalize(sample_request, backend, **settings):
    _PRIORS.clear()
    rec = Recommender(backend=backend, **settings)
    return rec.scorer("verbalizer").score(parse_request(sample_request))


def test_label_prior_is_measured_on_a_content_free_list_and_divided_out(sample_request):
    backend = FakeBackend(score_fn=biased("Heat (1995)"))  # Heat (1995) is candidate 0, label A
    raw = verbalize(sample_request, backend)
    np.testing.assert_allclose(raw.probabilities, [6 / 9, 1 / 9, 1 / 9, 1 / 9])  # (3*2, 1, 1, 1) renormalised
    cal = verbalize(sample_request, FakeBackend(score_fn=biased("Heat (1995)")), label_prior=True)
    np.testing.assert_allclose(cal.details["label_prior"], [3 / 6, 1 / 6, 1 / 6, 1 / 6])
    # (6/9)/(3/6) : (1/9)/(1/6) = 4/3 : 2/3 = 2 : 1 -> (2, 1, 1, 1) / 5
    np.testing.assert_allclose(cal.probabilities, [0.4, 0.2, 0.2, 0.2])


def test_label_prior_is_cached_per_model_template_and_candidate_count(sample_request):
    backend = FakeBackend(score_fn=biased())
    rec = Recommender(backend=backend, label_prior=True)
    _PRIORS.clear()
    scorer = rec.scorer("verbalizer")
    for _ in range(3):
        scorer.score(parse_request(sample_request))
    content_free = [p for c in backend.calls if c[0] == "next_token_logprobs" for p in c[1] if '"N/A"' in p]
    assert len(content_free) == 1 and "(no history)" in content_free[0]


@pytest.mark.parametrize(("n", "k", "shifts"), [(4, 4, [0, 1, 2, 3]), (4, 2, [0, 2]), (20, 4, [0, 5, 10, 15]), (3, 8, [0, 1, 2])])
def test_cyclic_orders_are_evenly_spaced_shifts(n, k, shifts):
    orders = cyclic_orders(n, k)
    assert [o[0] for o in orders] == shifts
    assert all(sorted(o) == list(range(n)) for o in orders)


def test_cyclic_shifts_cancel_a_pure_position_bias_exactly(sample_request):
    backend = FakeBackend(score_fn=biased())
    result = verbalize(sample_request, backend, permutations=4, permutation_mode="cyclic")
    np.testing.assert_allclose(result.probabilities, [0.25] * 4)
    assert result.details["permutations"] == 4
    (call,) = [c for c in backend.calls if c[0] == "next_token_logprobs"]
    assert len(call[1]) == 4  # the four shifts go to the backend as one batch
    random_orders = verbalize(sample_request, FakeBackend(score_fn=biased()), permutations=4)
    assert not np.allclose(random_orders.probabilities, 0.25)  # seeded shuffles need not balance positions


def test_full_cyclic_debiasing_is_allowed_for_twenty_candidates():
    """permutations = the number of candidates moves each one through every position; 20 candidates
    (the benchmark workload) must be accepted, and a runaway count is refused with the field named."""
    from llm_recommender.errors import InvalidRequestError
    from llm_recommender.scorers.llm.verbalizer import VerbalizerConfig

    assert VerbalizerConfig(permutations=20, permutation_mode="cyclic").permutations == 20
    assert len(cyclic_orders(20, 20)) == 20
    with pytest.raises(InvalidRequestError, match="verbalizer.permutations"):
        Recommender(backend=FakeBackend(), permutations=101)


def follows(title: str):
    """Position bias (A x3) plus a context effect: the candidate listed right after ``title`` gets x2."""
    def score_fn(prompt: str, token: str) -> float:
        m = re.search(rf'^([A-Z])\. "{re.escape(title)}"', prompt, re.MULTILINE)
        after = chr(ord(m.group(1)) + 1) if m else None
        return (math.log(3.0) if token == "A" else 0.0) + (math.log(2.0) if token == after else 0.0)
    return score_fn


@pytest.mark.parametrize("mode", ["cyclic", "random"])
def test_order_invariant_scores_do_not_depend_on_the_request_order(sample_request, mode):
    """Full cyclic shifts cancel a pure position bias but keep who stands next to whom, so a context
    effect still follows the request's order; starting from an order fixed by the ids removes that."""
    reordered = {**sample_request, "candidates": sample_request["candidates"][::-1]}
    settings = {"permutations": 4, "permutation_mode": mode}

    def by_id(request, **extra):
        result = verbalize(request, FakeBackend(score_fn=follows("Heat (1995)")), **settings, **extra)
        return dict(zip((c["id"] for c in request["candidates"]), result.probabilities))

    plain_a, plain_b = by_id(sample_request), by_id(reordered)
    assert any(abs(plain_a[i] - plain_b[i]) > 0.01 for i in plain_a)  # the request order leaks in
    inv_a, inv_b = by_id(sample_request, order_invariant=True), by_id(reordered, order_invariant=True)
    for i in inv_a:
        assert inv_a[i] == pytest.approx(inv_b[i], abs=1e-12)
    if mode == "cyclic":  # the position bias still cancels: Heat itself gets no bonus, one neighbour does
        assert sorted(inv_a.values())[:3] == pytest.approx([sorted(inv_a.values())[0]] * 3)
        assert max(inv_a.values()) > min(inv_a.values()) * 1.5
