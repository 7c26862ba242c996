"""Every strategy through the scripted fake backend (the only fake in the project)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from llm_recommender import PlattCalibrator, Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.calibration import load_calibrator
from llm_recommender.protocol import parse_request
from llm_recommender.scorers.llm.listwise import ListwiseScorer
from llm_recommender.scorers.llm.pointwise import PointwiseScorer
from llm_recommender.scorers.llm.verbalizer import VerbalizerScorer, permutation_orders
from llm_recommender.testing import LLMScorerTests


def label_of(prompt: str, title: str) -> str | None:
    m = re.search(r"^([A-Z])\. \"" + re.escape(title) + '"', prompt, re.M)
    return m.group(1) if m else None


def prefers(title: str, bonus: float = 3.0):
    """Fake model: likes whichever label sits next to `title` (wherever it is shown)."""
    def score_fn(prompt: str, token: str) -> float:
        return bonus if token == label_of(prompt, title) else 0.0
    return score_fn


def test_verbalizer_one_forward_pass_and_distribution(sample_request):
    backend = FakeBackend(score_fn=prefers("Casino (1995)"))
    resp = Recommender(backend=backend, strategy="verbalizer").rank_request(sample_request)
    assert resp.items[0].id == "12"
    assert [c[0] for c in backend.calls] == ["next_token_logprobs"]
    assert len(backend.calls[0][1]) == 1  # ONE prompt, one forward pass
    probs = {i.id: i.probability for i in resp.items}
    # renormalised over the 4 labels although the fake keeps 30% for other tokens
    e = np.exp(3.0)
    assert probs["12"] == pytest.approx(e / (e + 3))
    assert resp.items[0].score == pytest.approx(np.log(e / (e + 3)))
    assert [i.rank for i in resp.items] == [1, 2, 3]
    assert resp.history_used == 3 and resp.history_total == 3


def test_verbalizer_position_bias_and_permutation_averaging(sample_request):
    first_label = lambda prompt, token: 3.0 if token == "A" else 0.0  # always answers the first label
    one = Recommender(backend=FakeBackend(score_fn=first_label)).rank_request(sample_request)
    assert one.items[0].id == "10"  # the first candidate wins by position alone
    backend = FakeBackend(score_fn=first_label)
    avg = Recommender(backend=backend, permutations=8).rank_request(sample_request)
    assert len(backend.calls) == 1 and len(backend.calls[0][1]) == 8  # batched in one call
    spread = max(i.probability for i in avg.items) - min(i.probability for i in avg.items)
    assert spread < one.items[0].probability - one.items[-1].probability


def test_permutation_orders_are_seeded_and_start_with_identity(sample_request):
    req = parse_request(sample_request)
    a = permutation_orders(req, 4, seed=0)
    assert a == permutation_orders(req, 4, seed=0)
    assert a[0] == [0, 1, 2, 3] and all(sorted(o) == [0, 1, 2, 3] for o in a)
    assert a != permutation_orders(req, 4, seed=1)


def yes_for(title: str):
    def score_fn(prompt: str, token: str) -> float:
        cand = prompt.split("Candidate:")[-1]
        liked = title in cand
        return {"Yes": 2.0 if liked else -1.0, "No": 0.0}[token]
    return score_fn


def test_pointwise_prefix_reuse_and_probabilities(sample_request):
    backend = FakeBackend(score_fn=yes_for("Pocahontas"))
    resp = Recommender(backend=backend, strategy="pointwise").rank_request(sample_request)
    assert resp.items[0].id == "11"
    kind, (prefix, suffixes) = backend.calls[0]
    assert kind == "prefix_next_token_logprobs" and len(suffixes) == 4
    assert "Toy Story" in prefix and all("Toy Story" not in s for s in suffixes)
    assert resp.items[0].probability == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert resp.items[0].score == pytest.approx(2.0)


def test_pointwise_naive_matches_prefix_reuse(sample_request):
    reuse = Recommender(backend=FakeBackend(score_fn=yes_for("Heat")), strategy="pointwise").rank_request(sample_request)
    backend = FakeBackend(score_fn=yes_for("Heat"))
    naive = Recommender(backend=backend, strategy="pointwise", pointwise_prefix_reuse=False).rank_request(sample_request)
    # one full prompt per call: the naive baseline gives the backend no shared prefix to find
    assert [(c[0], len(c[1])) for c in backend.calls] == [("next_token_logprobs", 1)] * 4
    assert [i.id for i in reuse.items] == [i.id for i in naive.items]
    assert [i.probability for i in reuse.items] == pytest.approx([i.probability for i in naive.items])


def test_listwise_valid(sample_request):
    backend = FakeBackend(generations=['{"ranking": ["13", "11", "10", "12"]}'])
    resp = Recommender(backend=backend, strategy="listwise", listwise_keys="ids").rank_request(sample_request)
    assert [i.id for i in resp.items] == ["13", "11", "10"]
    assert not resp.fallback_used
    schema = [c for c in backend.calls if c[0] == "generate"][0][1][1]
    assert schema["properties"]["ranking"]["items"]["enum"] == ["10", "11", "12", "13"]
    # probability is the model's own distribution from the verbalizer pass
    assert sum(i.probability for i in resp.items) <= 1.0 + 1e-9


def test_listwise_reask_with_validation_error_then_success(sample_request):
    backend = FakeBackend(generations=['{"ranking": ["10", "10", "11", "12"]}', '{"ranking": ["12", "13", "11", "10"]}'])
    resp = Recommender(backend=backend, strategy="listwise", listwise_retries=2, listwise_keys="ids").rank_request(sample_request)
    assert [i.id for i in resp.items] == ["12", "13", "11"] and not resp.fallback_used
    second_prompt = [c for c in backend.calls if c[0] == "generate"][1][1][0][0]
    assert "more than once" in second_prompt and '["10", "10", "11", "12"]' in second_prompt


def test_listwise_falls_back_to_verbalizer_after_bounded_retries(sample_request):
    bad = ['not json', '{"ranking": ["99"]}', '{"ranking": ["10"]}', "never used"]
    backend = FakeBackend(score_fn=prefers("Heat (1995)"), generations=bad)
    resp = Recommender(backend=backend, strategy="listwise", listwise_retries=2, listwise_keys="ids").rank_request(sample_request)
    gens = [c for c in backend.calls if c[0] == "generate"]
    assert len(gens) == 3  # 1 ask + 2 re-asks, then stop
    assert resp.fallback_used and resp.fallbacks[0].stage == "listwise"
    assert resp.fallbacks[0].used == "verbalizer" and resp.fallbacks[0].attempts == 3
    assert "missing_id" in resp.fallbacks[0].reason
    assert resp.items[0].id == "10"  # the verbalizer's favourite


def test_reasons_for_top_k_never_change_ranking(sample_request):
    sample_request["reasons"] = True
    plain = Recommender(backend=FakeBackend(score_fn=prefers("Casino (1995)"))).rank_request({**sample_request, "reasons": False})
    backend = FakeBackend(score_fn=prefers("Casino (1995)"),
                          generations=lambda p, s: json.dumps({"reason": "It is much like what you watched before."}))
    resp = Recommender(backend=backend).rank_request(sample_request)
    assert [i.id for i in resp.items] == [i.id for i in plain.items]
    assert all(i.reason and i.reason.startswith("It is much like") for i in resp.items)
    assert len([c for c in backend.calls if c[0] == "generate"]) == 1  # one batched call for top-k
    assert len(backend.calls[-1][1][0]) == 3


def test_unparseable_reason_gets_the_requests_own_reason_and_is_recorded(sample_request):
    """Issue 26: a rejected reply left the reason empty (None); now every item asked for a reason gets one,
    from what the request shows, or a sentence saying plainly why there is none."""
    good = "It is much like what you watched before."
    backend = FakeBackend(generations=["garbage", json.dumps({"reason": good}), "also garbage"])
    resp = Recommender(backend=backend).rank_request({**sample_request, "reasons": True})
    reasons = [i.reason for i in resp.items]
    assert reasons[1] == good and all(reasons)
    assert "no more specific reason to give" in reasons[0]  # no genres in this request: nothing ties it to the history
    assert resp.fallbacks[0].stage == "reason" and resp.fallbacks[0].used == "evidence"


def test_degenerate_reason_is_replaced_and_recorded(sample_request):
    """The filter of reasons="llm" guards the history-only reasons too: a bare title is no reason."""
    title = sample_request["history"][0]["title"]
    backend = FakeBackend(generations=[json.dumps({"reason": title})] * 3)
    resp = Recommender(backend=backend).rank_request({**sample_request, "reasons": True})
    assert all(i.reason and i.reason != title for i in resp.items) and resp.fallback_used
    assert "bare title" in resp.fallbacks[0].reason
    assert resp.fallback_used and resp.fallbacks[0].stage == "reason" and resp.fallbacks[0].used == "evidence"


def test_capability_missing_is_an_error_not_a_silent_score(sample_request):
    from llm_recommender.errors import CapabilityError

    with pytest.raises(CapabilityError):
        Recommender(backend=FakeBackend(supports_logprobs=False)).rank_request(sample_request)


def test_calibrator_identity_default_and_platt_from_file(sample_request, tmp_path):
    path = tmp_path / "cal.json"
    PlattCalibrator(a=2.0, b=-1.0).save(path)
    assert isinstance(load_calibrator(path), PlattCalibrator)
    rec = Recommender(backend=FakeBackend(score_fn=yes_for("Heat")), strategy="pointwise", calibrator=path)
    resp = rec.rank_request(sample_request)
    assert resp.calibrator == "platt"
    top = resp.items[0]
    assert top.probability == pytest.approx(1 / (1 + np.exp(-(2.0 * top.score - 1.0))))


def test_bad_calibrator_files(tmp_path):
    from llm_recommender.errors import InvalidRequestError, UnknownNameError

    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text('{"type": "nope"}')
    (tmp_path / "c.json").write_text('{"type": "platt", "zz": 1}')
    with pytest.raises(InvalidRequestError):
        load_calibrator(tmp_path / "a.json")
    with pytest.raises(UnknownNameError):
        load_calibrator(tmp_path / "b.json")
    with pytest.raises(InvalidRequestError):
        load_calibrator(tmp_path / "c.json")
    with pytest.raises(InvalidRequestError):
        load_calibrator(tmp_path / "missing.json")


def test_rank_many_batches_one_call_per_strategy(sample_request):
    backend = FakeBackend()
    rec = Recommender(backend=backend)
    out = rec.rank_many([sample_request, sample_request, {**sample_request, "strategy": "pointwise"}])
    assert len(out) == 3 and out[2].strategy == "pointwise"
    assert [c[0] for c in backend.calls] == ["next_token_logprobs", "prefix_next_token_logprobs"]
    assert len(backend.calls[0][1]) == 2
    assert out[0].usage.forward_passes >= 1


# ---- conformance: each strategy through the shared mixins (llm_recommender.testing) ----------



class TestVerbalizerConformance(LLMScorerTests):
    component = VerbalizerScorer
    config = {"permutations": 3, "permutation_mode": "cyclic"}


class TestPointwiseConformance(LLMScorerTests):
    component = PointwiseScorer
    config = {"prefix_reuse": False}


class TestListwiseConformance(LLMScorerTests):
    component = ListwiseScorer
    config = {"top_k": 2, "retries": 1, "verbalizer": {"permutations": 2}}
