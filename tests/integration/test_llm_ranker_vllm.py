"""The ``llm_ranker`` with soft item tokens served on the real vLLM CPU engine (its prompt-embeddings
input) gives the transformers backend's scores: same top-1, close log-probabilities (tiny random model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.vllm_support import require_vllm, tiny_vllm_model_dir  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_llm_ranker_tiny import _config, _training_data
from test_representation import write_tiny_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("readout", ["label", "slot"])
def test_item_token_scores_match_between_transformers_and_vllm(tiny_vllm_model_dir, tmp_path, readout):  # noqa: F811
    """label: the last position's label log-probs; slot: the engine's prompt log-probs after each candidate's
    soft token (prompt_logprobs)."""
    require_vllm()
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(write_tiny_dataset(tmp_path / "data"), n_valid=6, n_candidates=12)
    cls = scorer_class("llm_ranker")
    config = _config(tiny_vllm_model_dir, tmp_path / "work", item_tokens="als", tokens_lr=1e-2, steps=2,
                     readout=readout)
    comp = cls(data.space, config).fit(data)  # type: ignore[call-arg]
    comp.save(tmp_path / "saved")
    requests = [c.request for c in data.validation]
    on_hf = cls.load(tmp_path / "saved", data.space).score_many(requests)

    served = cls(data.space, {**config, "backend": "vllm", "vllm": {"in_process": True, "max_model_len": 2048}})  # type: ignore[call-arg]
    served.load_state(tmp_path / "saved")
    ranker = served._ranker()  # pyright: ignore[reportAttributeAccessIssue]
    assert type(ranker.prompter.backend).__name__ == "VLLMBackend"
    try:
        on_vllm = served.score_many(requests)
    finally:
        ranker.prompter.backend.close()
    for a, b in zip(on_hf, on_vllm):
        assert int(np.argmax(a.scores)) == int(np.argmax(b.scores))
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-3)
    # the item tokens matter on vLLM too: the scores are not those of the same prompts without them
    assert any(not np.allclose(r.scores, r.scores[0]) for r in on_vllm)
