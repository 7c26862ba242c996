"""The real embedded default model (SmolLM2-135M-Instruct) through the transformers backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.errors import ModelLoadError
from llm_recommender.model_store import DEFAULT_MODEL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rec(default_model_dir):
    return Recommender(backend="transformers")


@pytest.fixture(scope="module")
def rec_fp32(default_model_dir):
    return Recommender(backend="transformers", dtype="float32")


def test_default_model_loads_from_converted_cache(rec, default_model_dir):
    assert (default_model_dir / "model.safetensors").is_file()
    assert rec.backend.context_length == 8192
    # label and yes/no ids derive from the tokenizer: no leading space after the generation prompt
    assert rec.backend.single_token_id("A") == 49 and rec.backend.single_token_id("Yes") == 10539


@pytest.mark.parametrize("strategy", ["verbalizer", "pointwise", "listwise"])
def test_each_strategy_ranks_for_real(rec, sample_request, strategy):
    resp = rec.rank_request({**sample_request, "strategy": strategy, "top_k": 4})
    assert resp.model == DEFAULT_MODEL and resp.backend == "transformers"
    assert sorted(i.id for i in resp.items) == ["10", "11", "12", "13"]
    assert [i.rank for i in resp.items] == [1, 2, 3, 4]
    assert all(0.0 <= i.probability <= 1.0 for i in resp.items)
    assert resp.usage.prompt_tokens > 0
    if strategy == "verbalizer":
        assert sum(i.probability for i in resp.items) == pytest.approx(1.0, abs=1e-6)
    if strategy == "listwise":
        # the schema-constrained JSON parsed, or the fallback is recorded: never silent
        assert resp.fallback_used == any(f.stage == "listwise" for f in resp.fallbacks)


def test_reasons_are_generated_and_capped(rec, sample_request):
    resp = rec.rank_request({**sample_request, "reasons": True, "top_k": 2})
    assert len(resp.items) == 2
    for item in resp.items:
        assert item.reason is None or 0 < len(item.reason) <= rec.settings.reasons.max_chars
    assert any(i.reason for i in resp.items) or resp.fallback_used
    plain = rec.rank_request({**sample_request, "top_k": 2})
    assert [i.id for i in plain.items] == [i.id for i in resp.items]


def test_prefix_reuse_matches_naive_prompts(rec_fp32, sample_request):
    scorer = rec_fp32.scorer("pointwise")
    from llm_recommender.protocol import parse_request

    req = parse_request(sample_request)
    prefix, suffixes, _, _ = scorer.split_prompts(req)
    ids = scorer._yes_no()
    reuse = rec_fp32.backend.prefix_next_token_logprobs(prefix, suffixes, ids)
    naive = rec_fp32.backend.next_token_logprobs([prefix + s for s in suffixes], ids)
    np.testing.assert_allclose(reuse, naive, atol=2e-3)


def test_prompts_sharing_a_start_compute_it_once_and_match_one_by_one(rec_fp32, sample_request):
    """The verbalizer's permutations of one request share the history: it runs once, the
    candidate lists continue it packed, and the answers equal separate passes."""
    from llm_recommender.backends.base import metered
    from llm_recommender.protocol import parse_request

    scorer = rec_fp32.scorer("verbalizer")
    req = parse_request({**sample_request, "history": sample_request["history"] * 3})
    orders = [[0, 1, 2, 3], [1, 2, 3, 0], [3, 2, 1, 0]]
    with metered() as meter:
        shared = scorer.score_many([req], orders=[orders])[0]
    assert meter.forward_passes == 2  # the shared history once, the three candidate lists in one packed pass
    alone = [scorer.score_many([req], orders=[[o]])[0].probabilities for o in orders]
    np.testing.assert_allclose(shared.probabilities, np.mean(alone, axis=0), atol=1e-5)


def test_unrelated_prompts_get_their_own_passes(rec_fp32):
    """Two unrelated prompts share only the chat preamble (< 64 tokens): each gets its own pass."""
    from llm_recommender.backends.base import metered

    backend = rec_fp32.backend
    a = backend.chat_prompt([{"role": "user", "content": "Pick A or B."}])
    b = backend.chat_prompt([{"role": "user", "content": "Choose one: A, B."}])
    ids = [backend.single_token_id(c) for c in "AB"]
    with metered() as meter:
        both = backend.next_token_logprobs([a, b], ids)
    assert meter.forward_passes == 2
    np.testing.assert_allclose(both, np.vstack([backend.next_token_logprobs([p], ids) for p in (a, b)]), atol=1e-6)


@pytest.fixture(scope="module")
def rec_padded(default_model_dir):
    # On CPU the backend sends full prompts one by one; this forces the padded batches GPUs use.
    return Recommender(backend="transformers", dtype="float32", pad_batches_on_cpu=True, batch_size=4)


def test_batched_left_padding_matches_single_prompts(rec_padded, sample_request):
    import torch

    from llm_recommender.backends.base import metered

    backend = rec_padded.backend
    long = backend.chat_prompt([{"role": "user", "content": "Films I liked: " + ", ".join(h["title"] for h in sample_request["history"]) + ". Pick A, B or C."}])
    short = backend.chat_prompt([{"role": "user", "content": "Pick A, B or C."}])
    ids = [backend.single_token_id(c) for c in "ABC"]
    assert backend.count_tokens(long) > backend.count_tokens(short) + 10  # the short row gets real padding
    with metered() as meter:
        batched = backend.next_token_logprobs([long, short], ids)
    assert meter.forward_passes == 1  # one padded pass, not two single ones
    single = np.vstack([backend.next_token_logprobs([p], ids) for p in (long, short)])
    np.testing.assert_allclose(batched, single, atol=1e-4)

    # The check can fail: the same padded batch without the attention mask and position ids
    # (padding read as text) misses the single-prompt answer by far more than the tolerance.
    enc = [backend.encode(p) for p in (long, short)]
    width = max(map(len, enc))
    rows = torch.tensor([[backend.tokenizer.pad_token_id] * (width - len(e)) + e for e in enc])
    with torch.inference_mode():
        logits = backend.model(input_ids=rows, use_cache=False).logits[:, -1, :]
    wrong = backend._last_logprobs(logits, ids)
    assert np.abs(wrong[1] - single[1]).max() > 1e-2

    # and through the verbalizer: two requests of different lengths in one padded pass
    from llm_recommender.protocol import parse_request

    reqs = [parse_request(sample_request), parse_request({**sample_request, "history": sample_request["history"][:1]})]
    scorer = rec_padded.scorer("verbalizer")
    with metered() as meter:
        together = scorer.score_many(reqs)
    assert meter.forward_passes == 1
    for b, r in zip(together, reqs):
        np.testing.assert_allclose(b.probabilities, scorer.score(r).probabilities, atol=1e-4)


def test_bf16_and_fp32_agree_on_the_top_item(rec, rec_fp32, sample_request):
    a = rec.rank_request(sample_request)
    b = rec_fp32.rank_request(sample_request)
    assert a.items[0].id == b.items[0].id
    assert a.items[0].probability == pytest.approx(b.items[0].probability, abs=0.1)


def test_history_truncated_to_budget_for_real(default_model_dir, sample_request):
    rec = Recommender(backend="transformers", max_prompt_tokens=300)
    history = [{"id": f"h{i}", "title": f"Some Movie Title Number {i} (1995)"} for i in range(60)]
    resp = rec.rank_request({**sample_request, "history": history})
    assert 0 < resp.history_used < 50 and resp.history_total == 60
    assert any("truncated" in n for n in resp.notes)


def test_tiny_random_model_from_folder(tiny_model_dir, sample_request):
    rec = Recommender(model=str(tiny_model_dir), backend="transformers", listwise_max_tokens=40, listwise_retries=1)
    for strategy in ("verbalizer", "pointwise", "listwise"):
        resp = rec.rank_request({**sample_request, "strategy": strategy})
        assert len(resp.items) == 3
    # a random model rarely writes a valid permutation in 40 tokens: whatever happened is recorded
    from llm_recommender.protocol import parse_request

    result = rec.scorer("listwise").score(parse_request(sample_request))
    attempts = result.details["attempts"]
    assert 1 <= len(attempts) <= 2
    assert result.details["fallback"] == (not attempts[-1]["ok"])


def test_unloadable_model_is_a_typed_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError):
        Recommender(model=str(tmp_path), backend="transformers")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError) as info:
        Recommender(model=str(empty), backend="transformers")
    assert "no config.json" in info.value.message


@pytest.fixture(scope="module")
def rec_by_kernel(default_model_dir):
    return {k: Recommender(backend="transformers", dtype="bfloat16", cpu_attention=k) for k in ("blocked", "sdpa")}


def test_both_cpu_attention_kernels_score_alike_in_bf16(rec_by_kernel, sample_request):
    """The blocked kernel (chosen without AMX) and torch's SDPA (chosen with AMX) on the real model:
    each is used where asked, and the verbalizer's and pointwise's probabilities agree."""
    blocked, sdpa = rec_by_kernel["blocked"], rec_by_kernel["sdpa"]
    assert blocked.backend.attention_implementation == "llm_rec_cpu_blocked"
    assert sdpa.backend.attention_implementation == "sdpa"  # forced: torch's SDPA for every pass
    for strategy in ("verbalizer", "pointwise"):
        # every candidate in both answers: in bf16 the two kernels may put a different item in a shorter top-k
        request = {**sample_request, "strategy": strategy, "top_k": len(sample_request["candidates"])}
        a, b = blocked.rank_request(request), sdpa.rank_request(request)
        pa = {i.id: i.probability for i in a.items}
        pb = {i.id: i.probability for i in b.items}
        assert max(abs(pa[k] - pb[k]) for k in pa) < 0.05, (strategy, pa, pb)
