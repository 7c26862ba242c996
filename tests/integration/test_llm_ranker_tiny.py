"""The ``llm_ranker`` bundle component on a tiny random model: train, save, reload, resume, no leakage,
and the fusion judges it like any component."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_representation import write_tiny_dataset

pytestmark = pytest.mark.integration


def _training_data(data_dir, n_valid=6, n_candidates=25):
    """What ``fit_bundle`` hands a component: sequences before each validation target, validation cases."""
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    ds = load_dataset("generic", data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    sequences = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    valid = llmrank_cases(ds, split="valid", n_users=n_valid, n_candidates=n_candidates, seed=0, history_len=10,
                          splits=splits)
    return TrainingData(space=space, sequences=sequences, seed=0, validation=valid), splits


def crash_once_after_step(monkeypatch, step: int) -> None:
    """The next training run dies once (KeyboardInterrupt) at the start of step ``step + 1``, after the
    checkpoint at ``step``: what an interrupted fit leaves behind."""
    from llm_recommender.tuning.generative import _Run

    original = _Run.train_step
    crashed: list[bool] = []

    def interrupted(self):
        if self.state["step"] == step and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(_Run, "train_step", interrupted)


def _config(model_dir, work, **over):
    return {"model": str(model_dir) if model_dir else None, "method": "full", "steps": 4, "batch_size": 2, "eval_every": 2, "eval_users": 6,
            "patience": 10, "lr": 1e-3, "tail": 2, "history": 4, "dtype": "float32", "threads": 1,
            "work_dir": str(work), "progress": False, "max_minutes": None, **over}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("ranker-data"))


def test_trains_saves_and_reloads_with_identical_scores(tiny_model_dir, tiny_data_dir, tmp_path):
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(tiny_data_dir)
    cls = scorer_class("llm_ranker")
    comp = cls(data.space, _config(tiny_model_dir, tmp_path / "work")).fit(data)
    curve = comp.describe()["learning_curve"]
    assert [p["step"] for p in curve["points"]] == [0, 2, 4]
    assert [p["examples_seen"] for p in curve["points"]] == [0, 4, 8]
    assert all(0.0 <= p["ndcg@10"] <= 1.0 for p in curve["points"]) and curve["steps_done"] == 4

    requests = [c.request for c in data.validation]
    assert len(requests[0].candidates) == 25  # more than one pass: chunks of 20
    before = comp.score_many(requests)
    assert before[0].details["passes"] == 2
    comp.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "model" / "config.json").is_file()
    assert json.loads((tmp_path / "saved" / "learning_curve.json").read_text())["points"] == curve["points"]
    again = cls.load(tmp_path / "saved", data.space).score_many(requests)
    for a, b in zip(before, again):
        np.testing.assert_array_equal(a.scores, b.scores)
    # within one pass the scores are the label log-probabilities renormalised over its labels
    assert np.exp(before[0].scores[:20]).sum() == pytest.approx(1.0)


def test_lora_saves_an_adapter_and_reloads_with_identical_scores(tiny_model_dir, tiny_data_dir, tmp_path):
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cls = scorer_class("llm_ranker")
    comp = cls(data.space, _config(tiny_model_dir, tmp_path / "work", method="lora", steps=2)).fit(data)
    requests = [c.request for c in data.validation]
    before = comp.score_many(requests)
    comp.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "model" / "adapter_config.json").is_file()
    assert not (tmp_path / "saved" / "model" / "model.safetensors").exists()
    again = cls.load(tmp_path / "saved", data.space).score_many(requests)
    for a, b in zip(before, again):
        np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)


def test_no_validation_or_test_target_reaches_the_training_examples(tiny_model_dir, tiny_data_dir, tmp_path,
                                                                    monkeypatch):
    """Through ``fit_bundle``: every example is a window of a user's interactions before their validation target."""
    from llm_recommender.bundle.fit import FitConfig, fit_bundle
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out
    from llm_recommender.ranker import component as ranker_component
    from llm_recommender.ranker.examples import split_tails

    seen = {}
    real_build = ranker_component.build_examples

    def recording(sequences, hints, **kw):
        seen["sequences"], seen["examples"], seen["tail"] = sequences, real_build(sequences, hints, **kw), kw["tail"]
        return seen["examples"]

    monkeypatch.setattr(ranker_component, "build_examples", recording)
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    cfg = FitConfig(dataset="generic", data_dir=tiny_data_dir, model=str(tiny_model_dir), progress=False,
                    components=["popularity", "llm_ranker"], valid_users=10,
                    component_config={"llm_ranker": _config(tiny_model_dir, tmp_path / "work", steps=1)})
    fit_bundle(cfg, tmp_path / "bundle", log=lambda m: None)

    ds = load_dataset("generic", tiny_data_dir)
    splits = leave_one_out(ds)
    ids = ds.item_ids
    index = {iid: k for k, iid in enumerate(ids)}
    users = list(splits)
    sequences, examples = seen["sequences"], seen["examples"]
    prefixes = split_tails(sequences, seen["tail"])
    assert len(sequences) == len(users) and examples
    for ex in examples:
        u, t = ex["user"], ex["t"]
        split = splits[users[u]]
        before = [index[x.item_id] for x in split.before("valid")]
        assert sequences[u].tolist() == before  # the fit's training sequence of this user: nothing after it
        target = ex["candidates"][ex["target"]]
        assert target == before[t] and ex["history"] == before[max(0, t - len(ex["history"])) : t]
        held_out = {index[split.target("valid").item_id], index[split.target("test").item_id]}
        assert not held_out & {target, *ex["history"]}
        # the retriever behind the hints and hard negatives never saw the example's target interaction
        assert t >= len(prefixes[u])
        assert len(set(ex["candidates"])) == len(ex["candidates"]) == 20
    positions = np.bincount([ex["target"] for ex in examples], minlength=20)
    assert positions.max() < len(examples) / 4  # the target's position is spread, not fixed


def test_resume_after_interruption_gives_the_same_weights(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(tiny_data_dir, n_valid=3, n_candidates=8)
    cls = scorer_class("llm_ranker")
    cls(data.space, _config(tiny_model_dir, tmp_path / "straight")).fit(data)

    crash_once_after_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        cls(data.space, _config(tiny_model_dir, tmp_path / "resumed")).fit(data)
    cls(data.space, _config(tiny_model_dir, tmp_path / "resumed")).fit(data)

    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    log = [json.loads(x)["step"] for x in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert log == [0, 2, 4]


def test_a_resumed_run_counts_the_minutes_it_trained_before(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    """max_minutes is the budget of the whole training: a run resumed from a checkpoint that already spent it
    stops after one step ("time limit"), instead of starting a fresh budget."""
    from llm_recommender.scorers import scorer_class

    data, _ = _training_data(tiny_data_dir)
    cls = scorer_class("llm_ranker")
    crash_once_after_step(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        cls(data.space, _config(tiny_model_dir, tmp_path / "run", steps=8)).fit(data)
    state_file = tmp_path / "run" / "checkpoint" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["step"] == 2
    state["train_seconds"] = 3600.0  # an hour already trained
    state_file.write_text(json.dumps(state))
    comp = cls(data.space, _config(tiny_model_dir, tmp_path / "run", steps=8, max_minutes=30)).fit(data)
    assert comp.curve["steps_done"] == 3 and "time limit" in comp.curve["stopped"]


def test_the_fusion_drops_a_useless_ranker_and_the_bundle_reloads_it(tiny_model_dir, tmp_path, monkeypatch,
                                                                      sample_request):
    """An untrained (random) LLM ranker adds nothing: the fusion's ordinary selection drops it and says why."""
    from llm_recommender import Recommender
    from llm_recommender.bundle.fit import FitConfig, fit_bundle

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "data", n_users=60)
    cfg = FitConfig(dataset="generic", data_dir=data, model=str(tiny_model_dir), progress=False,
                    components=["popularity", "cooccurrence", "llm_ranker"],
                    component_config={"llm_ranker": _config(None, tmp_path / "work", steps=1, lr=1e-9)})
    bundle = fit_bundle(cfg, tmp_path / "bundle", log=lambda m: None)
    manifest = json.loads((bundle / "bundle.json").read_text())
    rec = {c["name"]: c for c in manifest["components"]}["llm_ranker"]
    assert rec["kept"] is False and f"changes by {rec['marginal_gain']:+.4f}, below" in rec["reason"]
    assert "llm_ranker" not in manifest["fusion"]["components"]
    saved = bundle / "components" / "llm_ranker"
    assert (saved / "learning_curve.json").is_file()
    # the fit's --model reached the component: it fine-tuned and saved the bundle's LLM
    assert json.loads((saved / "config.json").read_text())["model"] == str(tiny_model_dir)
    rec = Recommender.load(bundle, strategy="llm_ranker")
    resp = rec.rank_request(sample_request)
    assert resp.strategy == "llm_ranker" and len(resp.items) == 3
    # the response names the LLM that ranked: the ranker's own fine-tuned model and backend, not the pipeline's
    assert (resp.model, resp.backend) == (f"{tiny_model_dir} fine-tuned (llm_ranker)", "transformers")
    fused = rec.rank_request({**sample_request, "strategy": "fused"})
    assert fused.backend == rec.backend_name  # the fusion dropped the ranker: it did not run
