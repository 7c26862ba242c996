"""Permutation-constrained listwise decoding through the real transformers backend.

The tiny random model writes garbage when left alone (its schema-shaped JSON repeats
ids); constrained, every ranking must be a permutation, for full, top-k and label keys.
The default model must rank a few real requests with no fallback.
(The vLLM engine and server are covered in test_vllm_tiny.py, which already starts them.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.backends.constrained import OPEN, PermutationState, hf_spec
from llm_recommender.backends.transformers_backend import TransformersBackend
from llm_recommender.protocol import parse_request
from llm_recommender.structured import parse_ranking
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


@pytest.mark.parametrize("settings", [{"listwise_keys": "ids"}, {"listwise_keys": "ids", "listwise_top_k": 3}, {},
                                      {"listwise_top_k": 2}])
def test_tiny_random_model_constrained_gives_valid_rankings(tiny, settings):
    requests = fixed_requests(3, n_candidates=6)
    assert_valid(_score(tiny, requests, **settings), requests, settings.get("listwise_top_k"))


def _token_by_token(backend, prompt: str, spec) -> str:
    """The reference: transformers' own generate, one token per step, masked by the same state machine."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    ids = torch.tensor([backend.encode(prompt)])
    state = PermutationState(spec)

    class Mask(LogitsProcessor):
        def __call__(self, input_ids, scores):
            state.consume(input_ids[0, ids.shape[1]:].tolist())
            scores[0] = state.mask(scores[0])
            return scores

    with torch.inference_mode():
        out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=spec.max_tokens(), logits_processor=LogitsProcessorList([Mask()]),
                                     pad_token_id=backend.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    return backend.tokenizer.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


@pytest.fixture(scope="module")
def tiny_fp32(tiny_model_dir):
    return TransformersBackend({"model": str(tiny_model_dir), "threads": 1, "dtype": "float32"})


def _variant(backend: TransformersBackend, **update) -> TransformersBackend:
    """The same model and tokenizer with other options (``draft_rankings``, ``listwise_key_choice``)."""
    return TransformersBackend(backend.config.model_copy(update=update), model=backend.model, tokenizer=backend.tokenizer)


def _undrafted(backend: TransformersBackend) -> TransformersBackend:
    """The same model and tokenizer, with draft-and-verify off (one pass per choice)."""
    return _variant(backend, draft_rankings=False)


@pytest.mark.parametrize("draft", [True, False])
@pytest.mark.parametrize("keys,k", [(["10", "11", "12", "7", "105", "1"], None), (list("ABCDEF"), None), (list("ABCDEF"), 3)])
def test_jump_forward_decoding_equals_token_by_token_generation(tiny_fp32, keys, k, draft):
    # The random model disagrees with the draft (the presented order) nearly everywhere: the
    # drafted path is exercised mostly through its corrections and cache cuts here.
    # Token-by-token choice (what vLLM does); labels are one token each, so both choices are this.
    backend = _variant(tiny_fp32, draft_rankings=draft, listwise_key_choice="token")
    assert backend.config.draft_rankings is draft
    prompts = [backend.chat_prompt([{"role": "user", "content": f"Rank these, request {i}: {' '.join(keys)}"}])
               for i in range(3)]
    gens = backend.generate_permutations(prompts, [keys] * 3, [k or len(keys)] * 3)
    for prompt, gen in zip(prompts, gens):
        assert gen.text == _token_by_token(backend, prompt, hf_spec(backend.tokenizer, keys, k))
        assert parse_ranking(gen.text, keys, k or len(keys)) and gen.finish_reason == "stop"


def _whole_key_reference(backend, prompt: str, spec) -> str:
    """The reference for whole-key choice: at each slot, every open key and its closing token after
    the text so far, one plain forward pass each; the likeliest key is written, then the separator."""
    torch = backend._torch
    context, out, left = backend.encode(prompt) + list(spec.open), list(spec.open), list(range(len(spec.items)))
    for slot in range(spec.k):
        closing = spec.close[0] if slot == spec.k - 1 else spec.sep[0]
        scores = []
        for i in left:
            ids = context + list(spec.items[i]) + [closing]
            with torch.inference_mode():
                lp = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            scores.append(sum(float(lp[len(context) - 1 + t, tok]) for t, tok in enumerate([*spec.items[i], closing])))
        best = left.pop(int(np.argmax(scores)))
        piece = list(spec.items[best]) + list(spec.close if slot == spec.k - 1 else spec.sep)
        context, out = context + piece, out + piece
    return backend.tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("prune", [None, 0.0])
@pytest.mark.parametrize("keys,k", [(["10", "11", "12", "7", "105", "1"], None), (["10", "11", "12", "7", "105", "1"], 3),
                                    (["12", "123", "7", "450"], 1), (["3", "42", "17"], None)])
def test_whole_key_choice_equals_a_plain_forward_pass_per_key_and_slot(tiny_fp32, monkeypatch, keys, k, prune):
    # Tree passes per slot (shared first digits, the chosen key and its separator kept in the
    # cache, keys pruned by their first token's bound) must choose as scoring every open key from
    # scratch does. prune=0.0: the first pass takes only the likeliest first token's keys, so the
    # later passes (those whose first token could still win) and keeping a key from either run.
    from llm_recommender.backends import transformers_backend

    if prune is not None:
        monkeypatch.setattr(transformers_backend, "_PRUNE_LOG", prune)
    assert tiny_fp32.config.listwise_key_choice == "whole"
    prompts = [tiny_fp32.chat_prompt([{"role": "user", "content": f"Rank these, request {i}: {' '.join(keys)}"}])
               for i in range(3)]
    before = tiny_fp32.stats.forward_passes
    gens = tiny_fp32.generate_permutations(prompts, [keys] * 3, [k or len(keys)] * 3)
    slots = 3 * min(k or len(keys), len(keys) - 1)  # slots with a choice; plus one prompt pass each
    if prune == 0.0 and k != 1:
        assert tiny_fp32.stats.forward_passes - before > 3 + slots  # some slot took a second pass
    for prompt, gen in zip(prompts, gens):
        assert gen.key_choice == "whole" and gen.finish_reason == "stop"
        assert gen.text == _whole_key_reference(tiny_fp32, prompt, hf_spec(tiny_fp32.tokenizer, keys, k))
        assert parse_ranking(gen.text, keys, k or len(keys))


def test_draft_and_verify_gives_the_same_rankings_as_one_pass_per_choice_in_fewer_passes(default_model_dir):
    # The default model mostly echoes the presented label order, so the draft is mostly kept.
    # (Drafts serve token-by-token choice; ids chosen whole take one tree pass per slot instead.)
    drafted = TransformersBackend({"threads": 1, "dtype": "float32", "listwise_key_choice": "token"})
    plain = _undrafted(drafted)
    requests = fixed_requests(3, n_candidates=12, history=10)
    for keys in ("labels", "ids"):
        texts, passes = {}, {}
        for name, backend in (("drafted", drafted), ("plain", plain)):
            rec = Recommender(backend=backend)
            before = backend.stats.forward_passes
            results = _score(rec, requests, listwise_keys=keys)
            passes[name] = backend.stats.forward_passes - before
            texts[name] = [r.details["attempts"][-1] for r in results], [r.ranking() for r in results]
            assert_valid(results, requests)
        assert texts["drafted"] == texts["plain"], keys
        # labels: the echo is mostly kept whole; ids (numeric here, a token per digit) are echoed less
        assert passes["drafted"] < passes["plain"] * (0.5 if keys == "labels" else 0.8), (keys, passes)


def test_key_logprobs_are_the_next_token_logprobs_after_the_json_opening(tiny_fp32):
    keys = list("ABCDE")
    prompt = tiny_fp32.chat_prompt([{"role": "user", "content": "Pick one of A B C D E."}])
    (gen,) = tiny_fp32.generate_permutations([prompt], [keys], [2], key_logprobs=True)
    expected = tiny_fp32.next_token_logprobs([prompt + OPEN], [tiny_fp32.single_token_id(x) for x in keys])[0]
    np.testing.assert_allclose(gen.key_logprobs, expected, atol=1e-4)
    first = json.loads(gen.text)["ranking"][0]
    assert first == keys[int(np.argmax(expected))]  # greedy: the first key is the model's first choice


@pytest.mark.parametrize("choice", ["whole", "token"])
def test_key_logprobs_of_multi_token_keys_score_every_token_and_the_close(tiny_fp32, choice):
    # Ids of several tokens, one the start of another: each key's log-prob is its tokens and the
    # token that closes it, after the prompt and the JSON opening, as one plain forward pass gives.
    keys, torch = ["12", "123", "7", "450"], tiny_fp32._torch
    backend = _variant(tiny_fp32, listwise_key_choice=choice)
    prompt = tiny_fp32.chat_prompt([{"role": "user", "content": "Rank 12, 123, 7 and 450."}])
    for k in (len(keys), 1):  # the close is the separator, or the end of the list for a top-1
        (gen,) = backend.generate_permutations([prompt], [keys], [k], key_logprobs=True)
        assert gen.key_choice == choice
        spec = hf_spec(tiny_fp32.tokenizer, keys, k)
        assert any(len(item) > 1 for item in spec.items)
        closing = spec.sep[0] if k > 1 else spec.close[0]
        context = tiny_fp32.encode(prompt) + list(spec.open)
        expected = []
        for item in spec.items:
            ids = context + list(item) + [closing]
            with torch.inference_mode():
                lp = torch.log_softmax(tiny_fp32.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
            expected.append(sum(float(lp[len(context) - 1 + t, tok]) for t, tok in enumerate([*item, closing])))
        np.testing.assert_allclose(gen.key_logprobs, expected, atol=1e-4)
        assert parse_ranking(gen.text, keys, k)


def test_id_rankings_take_their_probabilities_from_the_listwise_pass(default_model_dir):
    backend = TransformersBackend({"threads": 1, "dtype": "float32"})
    rec, requests = Recommender(backend=backend), fixed_requests(2, n_candidates=8, history=10)
    before = backend.stats.prompt_tokens
    results = _score(rec, requests, listwise_keys="ids")
    read = backend.stats.prompt_tokens - before
    assert_valid(results, requests)
    for result in results:
        assert result.details["probabilities"] == "first_key" and result.details["keys"] == "ids"
        assert result.probabilities.sum() == pytest.approx(1.0) and 0 < result.details["label_mass"] <= 1
        # chosen whole: the top-ranked id is the one with the highest probability
        assert result.details["key_choice"] == "whole"
        assert result.ranking()[0] == int(np.argmax(result.probabilities))
    # Token by token, the second request's first digit wins the slot for an id with a low
    # probability whole (measured: rank 1 is candidate 6, the highest probability candidate 0).
    token = _score(Recommender(backend=_variant(backend, listwise_key_choice="token")), requests, listwise_keys="ids")
    assert all(r.details["key_choice"] == "token" for r in token)
    assert any(r.ranking()[0] != int(np.argmax(r.probabilities)) for r in token)
    before = backend.stats.prompt_tokens
    verbalizer = _score(rec, requests, listwise_keys="ids", listwise_probabilities="verbalizer")
    assert [r.ranking() for r in verbalizer] == [r.ranking() for r in results]  # the same decoding
    assert all(r.details["probabilities"] == "verbalizer" for r in verbalizer)
    # no second prompt: the ids' tokens on the listwise prompt's cache instead of a verbalizer prompt
    assert read < 0.7 * (backend.stats.prompt_tokens - before)


def test_default_model_ranks_without_fallback(default_model_dir):
    rec = Recommender(backend="transformers", threads=1)
    requests = fixed_requests(2, n_candidates=8, history=10)
    responses = rec.rank_many([{**r, "strategy": "listwise"} for r in requests])
    assert not any(resp.fallback_used for resp in responses)
    for resp, request in zip(responses, requests):
        assert sorted(i.id for i in resp.items) == sorted(c["id"] for c in request["candidates"])
    assert_valid(_score(rec, requests), requests)
