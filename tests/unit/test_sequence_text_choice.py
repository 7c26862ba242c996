"""The sequence component's text=choose: a trial with text vectors and one without on the full fit's schedule, the
winner going on from its trial to the end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from llm_recommender.scorers.learned.sequence import SequenceComponent
from llm_recommender.testing import sample_requests, tiny_catalogue

SMALL = {"epochs": 2, "patience": None, "dim": 16, "layers": 1, "max_len": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data_with_validation():
    space, data = tiny_catalogue()
    data.validation = [SimpleNamespace(request=r, ground_truth_index=0) for r in sample_requests()]
    return space, data


def test_choose_trains_both_options_and_records_the_winner_and_the_runner_up(tmp_path):
    space, data = data_with_validation()
    comp = SequenceComponent(space, {"text": "choose", "model": SMALL, "choice_epochs": 2}).fit(data)
    choice = comp.config.text_choice
    assert choice is not None and set(choice["trials"]) == {"minilm", "none"}
    assert {choice["chosen"], choice["runner_up"]} == {"minilm", "none"}
    trials = choice["trials"]
    assert trials[choice["chosen"]]["valid_ndcg@10"] >= trials[choice["runner_up"]]["valid_ndcg@10"]
    assert all(t["epochs"] == 2 for t in trials.values())
    assert comp.config.text == choice["chosen"]  # the fitted model is the winner's kind
    assert comp.model.config.use_text == (choice["chosen"] != "none")
    assert comp.model.record["text_choice"] == choice
    dumped = json.loads(comp.config.model_dump_json())  # what bundle.json's component record holds
    assert dumped["text_choice"] == choice
    comp.save_state(tmp_path)
    loaded = SequenceComponent(space, comp.config)
    loaded.load_state(tmp_path)
    a, b = comp.score_many(sample_requests()), loaded.score_many(sample_requests())
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))


def test_the_winner_goes_on_from_its_trial_as_if_fitted_alone():
    space, data = data_with_validation()
    model = {**SMALL, "epochs": 6}
    comp = SequenceComponent(space, {"text": "choose", "model": model}).fit(data)  # a third of 6 epochs per trial
    choice = comp.config.text_choice
    assert choice is not None and choice["continued_from_trial"] is True
    assert all(t["epochs"] == 2 for t in choice["trials"].values())
    assert comp.model.record["epochs_run"] == 6 and len(comp.model.record["history"]) == 6
    alone = SequenceComponent(space, {"text": choice["chosen"], "model": model}).fit(data)
    a, b = comp.score_many(sample_requests()), alone.score_many(sample_requests())
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))
    assert [e["valid"] for e in comp.model.record["history"]] == [e["valid"] for e in alone.model.record["history"]]


def test_with_cold_cases_the_choice_weighs_them_beside_the_warm_ones():
    space, data = data_with_validation()
    data.cold_validation = [SimpleNamespace(request=r, ground_truth_index=len(r.candidates) - 1)
                            for r in sample_requests()[:3]]
    comp = SequenceComponent(space, {"text": "choose", "model": SMALL}).fit(data)
    choice = comp.config.text_choice
    assert choice is not None
    for t in choice["trials"].values():
        n_warm, n_cold = len(data.validation), len(data.cold_validation)
        assert t["choice_ndcg@10"] == pytest.approx((t["valid_ndcg@10"] * n_warm + t["cold_ndcg@10"] * n_cold)
                                                    / (n_warm + n_cold), abs=1e-3)
    trials = choice["trials"]
    assert trials[choice["chosen"]]["choice_ndcg@10"] >= trials[choice["runner_up"]]["choice_ndcg@10"]


def test_choose_stops_trials_at_the_time_budget():
    space, data = data_with_validation()
    comp = SequenceComponent(space, {"text": "choose", "model": SMALL, "choice_epochs": 5, "choice_budget_s": 0.0})
    comp.fit(data)
    assert comp.config.text_choice is not None
    assert all(t["epochs"] == 1 for t in comp.config.text_choice["trials"].values())  # one epoch each, then out of time


def test_auto_does_not_run_trials():
    space, data = data_with_validation()
    comp = SequenceComponent(space, {"text": "auto", "model": SMALL}).fit(data)
    assert comp.config.text == "minilm" and comp.config.text_choice is None
