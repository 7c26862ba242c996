"""The llm_ranker learns what its input carries: on a successor-walk catalogue (each user's next item is the
last one + 1) the sequence model behind the soft tokens names the target, and the tiny random Llama with the
slot readout must learn to read that within a few dozen steps. A test that fails when the training path,
the slots or the readout are wired wrong, which the save/reload tests cannot see."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval"))
from probe_llm_ranker_learns import write_successor_dataset

pytestmark = pytest.mark.integration


def test_the_slot_readout_learns_to_read_the_cf_scores(tiny_model_dir, tmp_path):
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers import scorer_class
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    ds = load_dataset("generic", write_successor_dataset(tmp_path / "data"))
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    valid = llmrank_cases(ds, split="valid", n_users=40, n_candidates=20, seed=0, history_len=10, splits=splits)
    cfg = {"model": str(tiny_model_dir), "method": "full", "steps": 60, "batch_size": 8, "eval_every": 30,
           "eval_users": 40, "patience": 10, "lr": 1e-3, "tokens_lr": 1e-3, "tail": 5, "history": 5,
           "hard_negatives": 0, "dtype": "float32", "threads": 1, "titles": False, "hints": False,
           "item_tokens": "sequence", "cf_scores": True, "readout": "slot",
           "item_tokens_config": {"text": "none", "model": {"epochs": 80, "lr": 0.005, "dropout": 0.0}},
           "work_dir": str(tmp_path / "work"), "progress": False, "max_minutes": None}
    comp = scorer_class("llm_ranker")(space, cfg).fit(TrainingData(space=space, sequences=seqs, seed=0,
                                                                   validation=valid))  # type: ignore[call-arg]
    points = [p["ndcg@10"] for p in comp.curve["points"]]
    assert comp.curve["chance_ndcg@10"] < 0.25
    assert points[-1] > points[0] + 0.2 and comp.curve["best_ndcg@10"] >= 0.8, points
