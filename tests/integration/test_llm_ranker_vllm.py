"""The ``llm_ranker`` with soft item tokens served on the real vLLM CPU engine (its prompt-embeddings
input) gives the transformers backend's scores: same top-1, close log-probabilities (tiny random model),
with fully fine-tuned weights and with a LoRA adapter (merged into a folder the engine loads)."""

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


@pytest.mark.parametrize(("readout", "method"), [("label", "full"), ("slot", "full"), ("label", "lora")])
def test_item_token_scores_match_between_transformers_and_vllm(tiny_vllm_model_dir, tmp_path, readout, method):  # noqa: F811
    """label: the last position's label log-probs; slot: the engine's prompt log-probs after each candidate's
    soft token (prompt_logprobs). lora: the bundle keeps the adapter alone; vLLM serves it merged."""
    require_vllm()
    from llm_recommender.ranker.training import merged_adapter_folder
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(write_tiny_dataset(tmp_path / "data"), n_valid=6, n_candidates=12)
    cls = scorer_class("llm_ranker")
    config = _config(tiny_vllm_model_dir, tmp_path / "work", item_tokens="als", tokens_lr=1e-2, steps=2,
                     readout=readout, method=method)
    comp = cls(data.space, config).fit(data)  # type: ignore[call-arg]
    comp.save(tmp_path / "saved")
    if method == "lora":  # a two-step fit may keep its zero-shot start (B = 0): give the adapter weights that show
        _perturb_adapter(tmp_path / "saved" / "model")
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
    if method == "lora":  # what the engine loaded carries the adapter: its weights are not the base model's
        assert (tmp_path / "saved" / "model" / "adapter_config.json").is_file()
        _assert_weights_differ(merged_adapter_folder(tmp_path / "saved" / "model", str(tiny_vllm_model_dir)),
                               Path(tiny_vllm_model_dir))
    # the item tokens matter on vLLM too: the scores are not those of the same prompts without them
    assert any(not np.allclose(r.scores, r.scores[0]) for r in on_vllm)


def _assert_weights_differ(merged: Path, base: Path) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(merged / "model.safetensors")), load_file(str(base / "model.safetensors"))
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    assert shared and max(float((a[k].float() - b[k].float()).abs().max()) for k in shared) > 1e-3


def _perturb_adapter(folder: Path) -> None:
    """Nonzero LoRA B matrices (seeded), so the merged model is not the base model."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    gen = torch.Generator().manual_seed(0)
    lora_b = [k for k in weights if "lora_B" in k]
    assert lora_b
    for k in lora_b:
        weights[k] = 0.05 * torch.randn(weights[k].shape, generator=gen, dtype=weights[k].dtype)
    save_file(weights, str(path), metadata={"format": "pt"})


def test_item_token_scores_match_through_a_served_ranker_over_http(tiny_vllm_model_dir, tmp_path):  # noqa: F811
    """What `llm-rec serve-model --bundle` runs (vLLM's HTTP server on the tuned weights, prompt embeddings on),
    scored through the openai backend: the item tokens travel as prompt_embeds, the transformers scores come back."""
    require_vllm()
    from llm_recommender.backends.configs import VLLMConfig
    from llm_recommender.backends.vllm_server import VLLMServer
    from llm_recommender.ranker.training import servable_folder
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(write_tiny_dataset(tmp_path / "data"), n_valid=6, n_candidates=12)
    cls = scorer_class("llm_ranker")
    config = _config(tiny_vllm_model_dir, tmp_path / "work", item_tokens="als", tokens_lr=1e-2, steps=2,
                     readout="slot", method="full")
    comp = cls(data.space, config).fit(data)  # type: ignore[call-arg]
    comp.save(tmp_path / "saved")
    requests = [c.request for c in data.validation]
    on_hf = cls.load(tmp_path / "saved", data.space).score_many(requests)

    weights = servable_folder(tmp_path / "saved" / "model", str(tiny_vllm_model_dir))
    assert weights == tmp_path / "saved" / "model"  # full fine-tuning: the component's own folder
    server = VLLMServer(VLLMConfig(model=str(weights), dtype="float32", max_model_len=2048),
                        served_model_name="llm_ranker", extra_args=["--enable-prompt-embeds"])
    server.start(timeout=300)
    try:
        served = cls(data.space, {**config, "backend": "openai", "server": {"base_url": server.url}})  # type: ignore[call-arg]
        served.load_state(tmp_path / "saved")
        assert type(served._ranker().prompter.backend).__name__ == "OpenAIBackend"  # pyright: ignore[reportAttributeAccessIssue]
        over_http = served.score_many(requests)
    finally:
        assert server.stop() == 0, server.log_tail()
    for a, b in zip(on_hf, over_http):
        assert int(np.argmax(a.scores)) == int(np.argmax(b.scores))
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-3)
    assert any(not np.allclose(r.scores, r.scores[0]) for r in over_http)
