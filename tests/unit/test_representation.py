"""Representation head and scorer on a tiny random model and a small synthetic dataset."""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest


def write_tiny_dataset(folder, n_users=30, n_items=40, per_user=15, seed=0):
    """Two taste groups (sci-fi / romance); users mostly pick from their own group."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "genres"])
        for i in range(n_items):
            w.writerow([i, f"Space adventure {i}" if i % 2 else f"Love story {i}", "Sci-Fi" if i % 2 else "Romance"])
    with open(folder / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "rating"])
        t = 1_000_000
        for u in range(n_users):
            group = u % 2
            items = rng.sample([i for i in range(n_items) if i % 2 == group], per_user - 3)
            items += rng.sample([i for i in range(n_items) if i % 2 != group], 3)
            rng.shuffle(items)
            for i in items:
                t += rng.randint(1, 100)
                w.writerow([f"u{u}", i, t, 4])
    return folder


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from llm_recommender.data import load_dataset

    return load_dataset("generic", write_tiny_dataset(tmp_path_factory.mktemp("tiny-data")))


@pytest.fixture(scope="module")
def tiny_rec(tiny_model_dir):
    from llm_recommender.recommender import Recommender

    return Recommender(model=str(tiny_model_dir), dtype="float32")


@pytest.fixture(scope="module")
def encoder(tiny_rec, tmp_path_factory):
    from llm_recommender.scorers.learned.encoder import ItemEncoder

    b = tiny_rec.backend
    return ItemEncoder(
        b.model, b.tokenizer, tiny_rec.renderer, model_name=b.model_name, cache=tmp_path_factory.mktemp("repr-cache")
    )


@pytest.fixture(scope="module")
def fitted(tiny_data, encoder):
    """The representation component fitted as ``llm-rec fit`` does: on interactions before each validation target."""
    from llm_recommender.data.splits import leave_one_out
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace
    from llm_recommender.scorers.learned.representation import RepresentationComponent

    splits = leave_one_out(tiny_data)
    space = ItemSpace([tiny_data.item(i) for i in tiny_data.item_ids])
    space.vectors["llm"] = encoder.encode_items(space.items)
    before = [s.before("valid") for s in splits.values()]
    data = TrainingData(space, [np.array([space.index[x.item_id] for x in b], dtype=np.int64) for b in before])
    config = {"epochs": 8, "batch_size": 64, "lr": 1e-2, "contexts_per_user": 10**6}
    return RepresentationComponent(space, **config).fit(data), before


def test_head_trains_loss_decreases(fitted):
    component, before = fitted
    losses = component.head.record["epoch_losses"]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.05
    assert component.head.record["positives"] == sum(max(0, len(b) - 3) for b in before) > 0


def test_item_cache_on_disk_is_reused(encoder, tiny_data, tiny_rec):
    from llm_recommender.scorers.learned.encoder import ItemEncoder

    items = [tiny_data.item(i) for i in tiny_data.item_ids[:5]]
    first = encoder.encode_items(items)
    assert encoder.cache_path is not None and encoder.cache_path.is_file()
    b = tiny_rec.backend
    again = ItemEncoder(
        b.model, b.tokenizer, tiny_rec.renderer, model_name=b.model_name, cache=encoder.cache_path.parent.parent
    )
    assert again.cache_key() == encoder.cache_key()
    assert {encoder.item_text(i) for i in items} <= set(again._mem)  # loaded, not recomputed
    np.testing.assert_array_equal(again.encode_items(items), first)
    # a history entry (rating, timestamp) maps to the same vector as the plain item
    hist = tiny_data.history_entries(tiny_data.sequences[next(iter(tiny_data.sequences))][:1])
    item = tiny_data.item(hist[0].id)
    np.testing.assert_array_equal(encoder.encode_items(hist), encoder.encode_items([item]))


def test_no_validation_or_test_target_reaches_training(tiny_data, fitted):
    """Every training positive and every history item comes strictly before the user's validation target."""
    from llm_recommender.data.contexts import build_contexts
    from llm_recommender.data.splits import leave_one_out
    from llm_recommender.tuning import TuneConfig, build_examples

    splits = leave_one_out(tiny_data)
    targets = {s.target(k).row for s in splits.values() for k in ("valid", "test")}
    index = {iid: k for k, iid in enumerate(tiny_data.item_ids)}
    ctx = build_contexts(splits, index, negatives=3, max_per_user=None, min_history=1)
    assert len(ctx.user_ids) == sum(len(s.sequence) - 3 for s in splits.values())
    assert not set(ctx.positive_rows.tolist()) & targets
    for uid, hist, row in zip(ctx.user_ids, ctx.histories, ctx.positive_rows):
        seq = splits[uid].sequence
        pos = [x.row for x in seq].index(row)
        assert pos < splits[uid].target_index("valid")
        assert [index[x.item_id] for x in seq[max(0, pos - 50) : pos]] == hist.tolist()
    # labels: exactly one positive per context, and it is the context's own next item
    group = ctx.labels.reshape(len(ctx.user_ids), -1)
    assert (group[:, 0] == 1).all() and (group[:, 1:] == 0).all()
    # the fitted head saw only those contexts (its record), and the tuning examples too
    _component, before = fitted
    assert not {x.row for b in before for x in b} & targets
    for objective in ("pointwise", "verbalizer"):
        ex = build_examples(TuneConfig(out="x", objective=objective, history=3, candidates=5), tiny_data, splits)
        assert ex and not {e["row"] for e in ex} & targets
        for e in ex:  # a history never holds the user's validation target or anything after it
            seq = splits[e["user"]].sequence
            cut = [x.row for x in seq].index(e["row"])
            assert cut < splits[e["user"]].target_index("valid")
            assert e["history"] == [x.item_id for x in seq[max(0, cut - 3) : cut]]


def test_item_vectors_do_not_depend_on_interactions(encoder, tiny_data):
    """The only cached features are item-text vectors: no interaction (hence no target) enters them."""
    items = [tiny_data.item(i) for i in tiny_data.item_ids[:3]]
    key = encoder.cache_key()
    v = encoder.encode_items(items)
    np.testing.assert_array_equal(v, encoder.encode_items(list(reversed(items)))[::-1])
    assert encoder.cache_key() == key  # model + template + layer + pooling only


def test_saved_head_with_a_transposed_projection_loads_identical(tmp_path):
    """A PCA projection is a transposed view; it must survive safetensors unchanged (it did not once)."""
    from llm_recommender.scorers.learned.representation import RepresentationHead, fit_projection

    rng = np.random.default_rng(0)
    proj, center = fit_projection(rng.normal(size=(50, 12)).astype(np.float32), 4)
    head = RepresentationHead(proj, center, np.zeros(12), np.ones(12), rng.normal(size=12), 0.5)
    head.save(tmp_path / "h")
    loaded = RepresentationHead.load(tmp_path / "h")
    np.testing.assert_array_equal(loaded.projection, head.projection)


def test_backends_without_hidden_states_are_a_typed_error():
    from llm_recommender.backends.fake import FakeBackend
    from llm_recommender.errors import CapabilityError
    from llm_recommender.prompts import PromptRenderer
    from llm_recommender.scorers.learned.encoder import ItemEncoder

    backend = FakeBackend()
    assert not backend.supports_hidden_states
    with pytest.raises(CapabilityError) as err:
        ItemEncoder.from_backend(backend, PromptRenderer(backend))
    assert err.value.param == "backend" and "hidden_states" in err.value.message


def test_item_vectors_read_text_with_the_special_tokens_its_tokenizer_adds(tiny_model_dir):
    """A tokenizer that adds <bos> (Llama, Gemma) gets it in front of every item text; Gemma 3 reads text badly
    without it. SmolLM2's adds nothing, so its vectors are what they were."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recommender.backends.pooling import pooled_hidden_states

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    text = "Toy Story (1995)"
    bare = tok(text, add_special_tokens=False)["input_ids"]
    assert tok(text)["input_ids"] == bare  # SmolLM2's tokenizer adds no special tokens

    class AddsBos:  # the same tokenizer, configured as a Llama-style one
        pad_token_id, eos_token_id, bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id

        def __call__(self, t: str, add_special_tokens: bool = True) -> dict:
            ids = tok(t, add_special_tokens=False)["input_ids"]
            return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}

    (with_bos,) = pooled_hidden_states(model, AddsBos(), [text], layers=[1], pooling="mean")
    (plain,) = pooled_hidden_states(model, tok, [text], layers=[1], pooling="mean")
    with torch.inference_mode():
        hidden = model.base_model(input_ids=torch.tensor([[tok.bos_token_id, *bare]]), output_hidden_states=True)
    np.testing.assert_allclose(with_bos[0], hidden.hidden_states[1][0].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(with_bos, plain)


@pytest.mark.parametrize("layers", [[1], [0, 1], [2], [1, 2]])
def test_item_vectors_stop_at_the_deepest_layer_asked_for_with_the_same_states(tiny_model_dir, layers):
    """The forward stops after the deepest requested layer (the middle one by default, half the cost) and gives
    exactly the states of a whole forward; the top layer (2 of 2, after the final norm) runs the whole model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recommender.backends.pooling import pooled_hidden_states

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    texts = ["Toy Story (1995)", "Heat (1995) | Action, Crime, Thriller"]
    ran: list[int] = []
    spy = model.base_model.layers[1].register_forward_hook(lambda *_: ran.append(1))
    got = pooled_hidden_states(model, tok, texts, layers=layers, pooling="last")
    spy.remove()
    assert bool(ran) == (max(layers) == 2)  # the second layer runs only when its output is asked for
    for layer, vectors in zip(layers, got):
        for text, v in zip(texts, vectors):
            ids = torch.tensor([tok(text)["input_ids"]])
            with torch.inference_mode():
                full = model.base_model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1]
            np.testing.assert_allclose(v, full.numpy(), rtol=1e-5, atol=1e-5)
