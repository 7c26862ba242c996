"""Soft item tokens in the ``llm_ranker`` (LLaRA / A-LLMRec) on the tiny random model: one slot per item
whose input embedding is the projected collaborative vector; the same table at training and serving;
saved (safetensors) and reloaded with identical scores; the projection-only method; unseen items."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_llm_ranker_tiny import _config, _training_data, crash_once_after_step
from test_representation import write_tiny_dataset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("ranker-tokens-data"))


def _fit(tiny_model_dir, data, work, **over):
    from llm_recommender.scorers import scorer_class

    cls = scorer_class("llm_ranker")
    return cls, cls(data.space, _config(tiny_model_dir, work, **over)).fit(data)  # type: ignore[call-arg]


def test_item_tokens_train_save_and_reload_with_identical_scores(tiny_model_dir, tiny_data_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from llm_recommender.ranker.soft_tokens import TOKENS_FILE, fit_item_table

    data, _ = _training_data(tiny_data_dir)
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", tokens_lr=1e-2)
    requests = [c.request for c in data.validation]
    before = comp.score_many(requests)
    assert before[0].details["passes"] == 2  # 25 candidates: two passes of at most 20, as with text prompts
    comp.save(tmp_path / "saved")
    saved = tmp_path / "saved" / "model"
    assert (saved / "config.json").is_file() and (saved / TOKENS_FILE).is_file()
    # the saved table is the one fitted on the fit's training sequences (standardised), not refitted at serving
    table, known = fit_item_table("als", data.space, data)
    tensors = load_file(str(saved / TOKENS_FILE))
    std = (table[known] - table[known].mean(0)) / table[known].std(0, ddof=1)
    np.testing.assert_allclose(tensors["table"].numpy()[known], std, rtol=1e-4, atol=1e-4)
    # the projection trained: it moved from its seeded start
    from llm_recommender.ranker.soft_tokens import ItemTokens

    start = ItemTokens(table, known, int(tensors["unknown"].shape[0]), seed=0)
    assert not torch.equal(start.proj[2].weight, tensors["proj.2.weight"])
    again = cls.load(tmp_path / "saved", data.space).score_many(requests)
    for a, b in zip(before, again):
        np.testing.assert_array_equal(a.scores, b.scores)
    assert comp.describe()["item_tokens"] == "als"


def test_the_scores_read_the_item_tokens(tiny_model_dir, tiny_data_dir, tmp_path):
    """Swapping two candidates' table rows (nothing else) changes their scores: the slots carry the vectors."""
    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    _, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", steps=1, titles=False, hints=False)
    request = data.validation[0].request
    before = comp.score_many([request])[0].scores
    tokens = comp._ranker().prompter.item_tokens
    rows = data.space.rows(request.candidates)
    a, b = int(rows[0]), int(rows[1])
    with __import__("torch").no_grad():
        tokens.table[[a, b]] = tokens.table[[b, a]].clone()
        tokens.known[[a, b]] = tokens.known[[b, a]].clone()
    after = comp.score_many([request])[0].scores
    assert not np.allclose(before, after)


def test_projection_trains_the_projection_alone_and_saves_no_llm_weights(tiny_model_dir, tiny_data_dir, tmp_path):
    from safetensors.torch import load_file

    from llm_recommender.ranker.soft_tokens import TOKENS_FILE

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="sequence", method="projection",
                     titles=False, item_tokens_config={"model": {"epochs": 1}})
    assert comp.describe()["learning_curve"]["method"] == "projection"
    comp.save(tmp_path / "saved")
    saved = tmp_path / "saved" / "model"
    assert (saved / TOKENS_FILE).is_file()
    assert not (saved / "model.safetensors").exists() and not (saved / "adapter_config.json").exists()
    # the LLM checkpointed by the run is the untouched base model
    base = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    ckpt = load_file(str(tmp_path / "work" / "checkpoint" / "model.safetensors"))
    common = [k for k in ckpt if k in base]
    assert common and all(np.array_equal(ckpt[k].numpy(), base[k].numpy()) for k in common)
    requests = [c.request for c in data.validation]
    before = comp.score_many(requests)
    again = cls.load(tmp_path / "saved", data.space).score_many(requests)
    for a, b in zip(before, again):
        np.testing.assert_array_equal(a.scores, b.scores)


def test_unseen_items_get_the_learned_unknown_vector(tiny_model_dir, tiny_data_dir, tmp_path):
    import torch

    from llm_recommender.protocol import Item
    from llm_recommender.ranker.soft_tokens import ItemTokens

    table = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    known = np.array([True, True, False, True, True])
    tokens = ItemTokens(table, known, hidden=8, seed=0)
    out = tokens(torch.tensor([0, 2, -1, 4])).detach()
    # an item with no vector: the average item (0 in the standardised table) plus the unknown vector
    average = tokens.proj(torch.zeros(1, 3))[0].detach()
    np.testing.assert_allclose(out[1].numpy(), (average + tokens.unknown).detach().numpy(), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out[1].numpy(), out[2].numpy())
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[0], out[3])
    # with CF scores on the slots, an unknown item's score still goes through (a cold item is ranked by it)
    scored = ItemTokens(table, known, hidden=8, seed=0, score_dim=1)
    with torch.no_grad():
        scored.proj[2].weight.normal_()  # the seeded start is near zero; any trained projection reads the score
        a, b = scored(torch.tensor([-1, -1]), torch.tensor([1.0, -1.0]))
    assert not torch.allclose(a, b)

    data, _ = _training_data(tiny_data_dir, n_valid=2, n_candidates=6)
    _, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", steps=1, hints=False)
    request = data.validation[0].request
    new = Item(id="never-seen", title="A Film Nobody Rated")
    res = comp.score_many([request.model_copy(update={"candidates": [*request.candidates[:3], new]})])[0]
    assert np.isfinite(res.scores).all() and len(res.scores) == 4


def test_a_slot_per_item_in_the_prompt(tiny_model_dir, tiny_data_dir, tmp_path):
    """Each history item and candidate has exactly one placeholder position, at its rows, in prompt order."""
    data, _ = _training_data(tiny_data_dir, n_valid=2, n_candidates=6)
    _, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", steps=1)
    prompter = comp._ranker().prompter
    request = data.validation[0].request
    history = prompter.renderer.chronological(request.history)
    (ids, slots, rows), used = prompter.soft_prompt(history, request.candidates[:5], [""] * 5)
    assert used == min(4, len(history)) and len(slots) == used + 5
    assert rows == [*data.space.rows(history[-used:]).tolist(), *data.space.rows(request.candidates[:5]).tolist()]
    pad = prompter.backend.tokenizer.pad_token_id
    assert all(ids[p] == pad for p in slots) and slots == sorted(slots)


def test_titles_off_needs_item_tokens():
    from llm_recommender.ranker.component import LLMRankerConfig

    with pytest.raises(ValueError, match="item_tokens"):
        LLMRankerConfig(titles=False)
    with pytest.raises(ValueError, match="item_tokens"):
        LLMRankerConfig(method="projection")
    cfg = LLMRankerConfig(item_tokens="als", titles=False, method="projection")
    assert LLMRankerConfig.model_validate(json.loads(cfg.model_dump_json())) == cfg


def test_resume_with_item_tokens_gives_the_same_projection(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    """The projection is checkpointed with the model: an interrupted run resumes to the same weights."""
    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    over = {"item_tokens": "als", "tokens_lr": 1e-2, "patience": 10}
    _fit(tiny_model_dir, data, tmp_path / "straight", **over)
    crash_once_after_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _fit(tiny_model_dir, data, tmp_path / "resumed", **over)
    _fit(tiny_model_dir, data, tmp_path / "resumed", **over)
    import torch

    # the last checkpoint's projection (the best weights could be step 0's, equal whatever happened)
    a = torch.load(tmp_path / "straight" / "checkpoint" / "custom_checkpoint_0.pkl", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint" / "custom_checkpoint_0.pkl", weights_only=True)
    assert a.keys() == b.keys() and "proj.2.weight" in a
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_the_item_table_sees_no_validation_or_test_target(tiny_model_dir, tmp_path, monkeypatch):
    """Through ``fit_bundle``: the collaborative model behind the item tokens is fitted on the training split alone."""
    from llm_recommender.bundle.fit import FitConfig, fit_bundle
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out
    from llm_recommender.ranker import soft_tokens

    seen = {}
    real_fit = soft_tokens.fit_item_model

    def recording(source, space, data, config=None):
        seen["sequences"] = [s.tolist() for s in data.sequences]
        return real_fit(source, space, data, config)

    monkeypatch.setattr(soft_tokens, "fit_item_model", recording)
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    data_dir = write_tiny_dataset(tmp_path / "data")
    cfg = FitConfig(dataset="generic", data_dir=data_dir, model=str(tiny_model_dir), progress=False,
                    components=["popularity", "llm_ranker"], valid_users=10,
                    component_config={"llm_ranker": _config(tiny_model_dir, tmp_path / "work", steps=1,
                                                            item_tokens="als")})
    fit_bundle(cfg, tmp_path / "bundle", log=lambda m: None)
    ds = load_dataset("generic", data_dir)
    splits = leave_one_out(ds)
    index = {iid: k for k, iid in enumerate(ds.item_ids)}
    expected = [[index[x.item_id] for x in s.before("valid")] for s in splits.values()]
    assert seen["sequences"] == [e for e in expected if e]


def test_lora_with_item_tokens_saves_the_adapter_and_the_projection(tiny_model_dir, tiny_data_dir, tmp_path):
    from llm_recommender.ranker.soft_tokens import TOKENS_FILE

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", method="lora", steps=2)
    comp.save(tmp_path / "saved")
    saved = tmp_path / "saved" / "model"
    assert (saved / "adapter_config.json").is_file() and (saved / TOKENS_FILE).is_file()
    requests = [c.request for c in data.validation]
    before = comp.score_many(requests)
    again = cls.load(tmp_path / "saved", data.space).score_many(requests)
    for a, b in zip(before, again):
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)


def test_cf_scores_ride_on_the_slots_from_a_model_that_never_saw_the_examples_targets(tiny_model_dir, tiny_data_dir,
                                                                                     tmp_path):
    """cf_scores: each candidate slot carries the item model's z-scored score; the item model is fitted on the
    sequences less each user's last ``tail`` items (the examples' targets); it is saved and reloads identically."""
    from llm_recommender.ranker.examples import split_tails
    from llm_recommender.ranker.scorer import cf_zscores

    data, _ = _training_data(tiny_data_dir, n_valid=4, n_candidates=8)
    cfg = {"item_tokens": "sequence", "cf_scores": True, "titles": False, "hints": False, "tail": 2, "steps": 2,
           "item_tokens_config": {"model": {"epochs": 2, "patience": None}}}
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", **cfg)
    # the item model learned from the prefixes only: its fitted windows exclude every example's target position
    record = comp._item_model.model.record
    prefix_items = sum(max(0, len(s) - 2) for s in data.sequences)
    assert record["n_windows"] >= 1 and prefix_items < sum(len(s) for s in data.sequences)
    assert all(ex["t"] >= len(s) - 2 for ex in comp.examples for s in [data.sequences[ex["user"]]])
    prompter = comp._ranker().prompter
    request = data.validation[0].request
    prompt, _ = prompter.soft_prompt(request.history, request.candidates, [""] * len(request.candidates))
    ids, slots, rows, feats, labels = prompt
    assert set(labels) == {-1}  # no slot_labels: no slot carries a label vector
    n_cand = len(request.candidates)
    assert len(feats) == len(rows) == len(slots) and not any(feats[: len(rows) - n_cand])  # history slots: 0
    cand = np.asarray(feats[-n_cand:])
    assert abs(cand.mean()) < 1e-9 and abs(cand.std() - 1) < 1e-6  # z-scored over the pass
    want = cf_zscores(comp._item_scores, request.history, request.candidates)
    np.testing.assert_allclose(cand, want)
    before = comp.score_many([request])[0].scores
    comp.save(tmp_path / "saved")
    again = cls.load(tmp_path / "saved", data.space)
    np.testing.assert_array_equal(before, again.score_many([request])[0].scores)
    # the slots read the scores: flipping their sign changes the ranking scores
    flipped = again._ranker().prompter
    flipped.item_scores = lambda h, c: -comp._item_scores(h, c)
    assert not np.allclose(before, again.score_many([request])[0].scores)
    assert split_tails(data.sequences, 2)[0].tolist() == data.sequences[0][:-2].tolist()


def test_cf_scores_need_the_sequence_item_tokens(tiny_model_dir, tmp_path):
    from llm_recommender.ranker.component import LLMRankerConfig

    with pytest.raises(ValueError, match="cf_scores"):
        LLMRankerConfig(**_config(tiny_model_dir, tmp_path, item_tokens="als", cf_scores=True))


def test_slot_labels_start_from_the_letters_embeddings_and_reload_identically(tiny_model_dir, tiny_data_dir,
                                                                              tmp_path):
    """slot_labels: each candidate slot also carries its label's vector (history slots none); the vectors start
    from the LLM's embeddings of A, B, ... and are saved with the projection."""
    import torch

    from llm_recommender.ranker.soft_tokens import label_vectors

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", slot_labels=True, titles=False,
                     hints=False, steps=0 + 2)
    prompter = comp._ranker().prompter
    request = data.validation[0].request
    (ids, slots, rows, scores, labels), _ = prompter.soft_prompt(request.history, request.candidates,
                                                                 [""] * len(request.candidates))
    n = len(request.candidates)
    assert labels[-n:] == list(range(n)) and set(labels[:-n]) <= {-1} and not any(scores)
    tokens = prompter.item_tokens
    start = label_vectors(prompter.backend.model, prompter.backend.tokenizer, tokens.labels.shape[0])
    assert tokens.labels.shape[1] == tokens.hidden and not np.allclose(start, 0)
    # the label vectors are what the slots add: removing them changes the scores
    before = comp.score_many([request])[0].scores
    comp.save(tmp_path / "saved")
    again = cls.load(tmp_path / "saved", data.space)
    np.testing.assert_array_equal(before, again.score_many([request])[0].scores)
    with torch.no_grad():
        again._ranker().prompter.item_tokens.labels.zero_()
    assert not np.allclose(before, again.score_many([request])[0].scores)


def test_readout_slot_trains_on_the_numbers_it_serves_and_reloads_identically(tiny_model_dir, tiny_data_dir,
                                                                               tmp_path):
    """readout slot: each candidate's score is log p(" yes") - log p(" no") right after its soft token, the last
    thing on its line. The training path (one left-padded batch), the transformers backend (one pass per prompt)
    and the generic path (one cut prompt per candidate, what vLLM runs) give the same numbers; 25 candidates
    run in two passes; the saved component reloads with identical scores."""
    import torch

    from llm_recommender.backends.base import Backend, EmbedsPrompt
    from llm_recommender.ranker.soft_tokens import slot_logprobs

    data, _ = _training_data(tiny_data_dir)
    cls, comp = _fit(tiny_model_dir, data, tmp_path / "work", item_tokens="als", readout="slot", tokens_lr=1e-2)
    prompter = comp._ranker().prompter
    backend = prompter.backend
    tok = backend.tokenizer
    assert [tok.decode([i]) for i in prompter.readout_ids] == [" yes", " no"]
    requests = [c.request for c in data.validation]
    cut = [requests[0].candidates[:20], requests[1].candidates[:7]]
    prompts = [prompter.soft_prompt(r.history, c, [""] * len(c))[0] for r, c in zip(requests, cut)]
    for pr, c in zip(prompts, cut):  # each candidate's slot ends its line
        assert all(tok.decode(pr[0][k + 1 : k + 2]).startswith("\n") for k in pr[1][-len(c):])
    with torch.no_grad():  # the training path: both prompts in one padded pass
        trained = slot_logprobs(backend.model, prompter.item_tokens, prompts, tok.pad_token_id, "cpu", [20, 7],
                                prompter.readout_ids)
    served = comp._ranker()._soft_logprobs(prompts, [20, 7])
    np.testing.assert_allclose(served[0], (trained[0][:, 0] - trained[0][:, 1]).numpy(), atol=1e-4)
    np.testing.assert_allclose(served[1, :7], (trained[1][:, 0] - trained[1][:, 1]).numpy(), atol=1e-4)
    assert np.isneginf(served[1, 7:]).all()
    tokens = prompter.item_tokens
    with torch.no_grad():
        embeds = [EmbedsPrompt(pr[0], pr[1], tokens(torch.tensor(pr[2]))) for pr in prompts]
    at = [pr[1][-len(c):] for pr, c in zip(prompts, cut)]
    generic = Backend.embeds_logprobs_at(backend, embeds, at, prompter.readout_ids)  # the base class's cut prompts
    one_pass = backend.embeds_logprobs_at(embeds, at, prompter.readout_ids)
    for g, o in zip(generic, one_pass):
        np.testing.assert_allclose(g, o, atol=1e-4)
    before = comp.score_many(requests)
    assert before[0].details["passes"] == 2 and np.isfinite(before[0].scores).all()
    comp.save(tmp_path / "saved")
    again = cls.load(tmp_path / "saved", data.space)
    assert again.describe()["readout"] == "slot"
    for a, b in zip(before, again.score_many(requests)):
        np.testing.assert_array_equal(a.scores, b.scores)


def test_readout_slot_needs_item_tokens(tiny_model_dir, tmp_path):
    from llm_recommender.ranker.component import LLMRankerConfig

    with pytest.raises(ValueError, match="readout"):
        LLMRankerConfig(**_config(tiny_model_dir, tmp_path, readout="slot"))


def test_cold_candidates_are_ranked_by_the_text_path_of_the_item_model(tiny_model_dir, tiny_data_dir, tmp_path):
    """cf_scores with a text-backed item model (the tiny LLM's item vectors): candidates the bundle never saw
    get their item-model score from their text, so the slots differ; an ID-only item model has nothing to go
    on for them and their slots are all alike."""
    from llm_recommender.backends import backend_class
    from llm_recommender.backends.transformers_backend import TransformersConfig
    from llm_recommender.prompts import PromptRenderer
    from llm_recommender.protocol import Item
    from llm_recommender.scorers.learned.encoder import ItemEncoder

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=6)
    backend = backend_class("transformers")(TransformersConfig(model=str(tiny_model_dir)))
    encoder = ItemEncoder.from_backend(backend, PromptRenderer(backend), batch_size=32)
    data.space.vectors["llm"] = encoder.encode_items(data.space.items)
    data.space.set_encoder("llm", lambda: encoder.encode_items)
    cold = [Item(id=f"cold-{k}", title=t) for k, t in enumerate(["A Quiet Harbour", "Space Pirates III",
                                                                  "The Last Waltz", "Robots at Noon"])]
    request = data.validation[0].request.model_copy(update={"candidates": cold})
    z_of = {}
    for text in ("llm", "none"):
        cfg = {"item_tokens": "sequence", "cf_scores": True, "titles": False, "hints": False, "tail": 2, "steps": 1,
               "readout": "slot", "item_tokens_config": {"text": text, "model": {"epochs": 2, "patience": None}}}
        _, comp = _fit(tiny_model_dir, data, tmp_path / text, **cfg)
        prompt, _ = comp._ranker().prompter.soft_prompt(request.history, cold, [""] * len(cold))
        assert prompt[2][-len(cold):] == [-1] * len(cold)  # not in the catalogue: no table row
        z_of[text] = np.asarray(prompt[3][-len(cold):])
        scores = comp.score_many([request])[0].scores
        assert np.isfinite(scores).all()
        if text == "llm":  # the scores follow the text-path z-scores through the unknown slots
            assert z_of[text].std() > 0.5
        else:  # every cold slot is the same input (only its position in the prompt differs)
            assert not z_of[text].any()
    assert z_of["llm"].std() > 0.5


def test_cold_dropout_shows_a_seeded_share_of_training_candidates_as_unknown(tiny_model_dir, tiny_data_dir, tmp_path):
    """cold_dropout: in training prompts (only), a share of the candidates' rows become -1 with their CF score
    kept; the same example draws the same candidates every time; validation and serving prompts keep them."""
    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cfg = {"item_tokens": "sequence", "cf_scores": True, "titles": False, "hints": False, "tail": 2, "steps": 1,
           "readout": "slot", "cold_dropout": 0.5, "item_tokens_config": {"text": "none", "model": {"epochs": 2}}}
    _, comp = _fit(tiny_model_dir, data, tmp_path / "work", **cfg)
    prompter = comp._ranker().prompter
    dropped = kept = 0
    for ex in comp.examples[:10]:
        (ids, slots, rows, scores, _), _ = prompter.prompt(ex)
        again = prompter.prompt(ex)[0]
        assert again[2] == rows  # seeded by the example
        n = len(ex["candidates"])
        full = prompter.soft_prompt([data.space.items[r] for r in ex["history"]],
                                    [data.space.items[r] for r in ex["candidates"]], ex["hints"],
                                    cf_history=[data.space.items[r] for r in ex["cf_history"]])[0]
        assert rows[:-n] == full[2][:-n] and scores == full[3]  # history rows and every CF score kept
        assert all(r in (-1, f) for r, f in zip(rows[-n:], full[2][-n:]))
        dropped += sum(r == -1 for r in rows[-n:])
        kept += sum(r >= 0 for r in rows[-n:])
        assert -1 not in full[2]
    assert dropped > 0 and kept > 0
