"""eval/synth_data.py: the synthetic MovieLens-like data loads through the ML-1M loader and has sequential signal."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from llm_recommender.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "synth_data.py"


@pytest.fixture(scope="module")
def synth():
    spec = importlib.util.spec_from_file_location("synth_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_writes_ml1m_files_that_load_with_movielens_shape(synth, tmp_path):
    assert synth.main(["--interactions", "1e5", "--out", str(tmp_path), "--seed", "3"]) == 0
    ds = load_dataset("ml-1m", tmp_path, cache=False)
    users, items = synth.sizes(100_000)
    assert len(ds.item_ids) == items
    per_user = Counter(ds.column("interactions", "user_id"))
    assert 0.9 * users <= len(per_user) <= users and min(per_user.values()) >= 20
    assert 0.85 * 100_000 <= len(ds.interactions) <= 1.1 * 100_000
    seqs = ds.sequences
    ts = [[x.timestamp for x in s] for s in seqs.values()]
    assert all(len(set(t)) == len(t) for t in ts)  # strictly ordered in time, no ties
    assert all(len({x.item_id for x in s}) == len(s) for s in seqs.values())  # no repeats
    assert ds.item(ds.item_ids[0]).title and ds.item_row(ds.item_ids[0])["genres"]


def test_same_seed_same_data_other_seed_other_data(synth):
    a, b, c = (synth.generate(20_000, s) for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["item"], c["item"])


def test_next_item_is_predictable_beyond_popularity(synth):
    d = synth.generate(50_000, 0)
    user, item = d["user"], d["item"]
    same_user = user[1:] == user[:-1]
    prev, nxt = item[:-1][same_user], item[1:][same_user]
    half = len(prev) // 2
    # Popularity alone: always guess the most frequent item. Markov: the most frequent successor of the last item.
    pop_acc = float(np.mean(nxt[half:] == np.bincount(item).argmax()))
    succ: dict[int, Counter] = {}
    for p, n in zip(prev[:half], nxt[:half]):
        succ.setdefault(int(p), Counter())[int(n)] += 1
    guess = np.array([succ[int(p)].most_common(1)[0][0] if int(p) in succ else -1 for p in prev[half:]])
    markov_acc = float(np.mean(guess == nxt[half:]))
    assert markov_acc > 5 * pop_acc and markov_acc > 0.1, (markov_acc, pop_acc)
