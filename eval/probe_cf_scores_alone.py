"""What the llm_ranker's cf_scores carry on their own: NDCG@10 of ranking by the slots' z-scores alone (the
sequence model fitted on the training sequences less each user's last 5 items, as the component fits it),
on 400 training examples and on the fit's first 60 validation cases (20 candidates). The ceiling of a
ranker that only copies its slots' CF scores.

    python eval/probe_cf_scores_alone.py --data-dir /work/shared/data/ml-100k
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ndcg10(z: list[float], target: int) -> float:
    rank = int((np.asarray(z) > z[target]).sum())
    return float(1 / np.log2(rank + 2)) if rank < 10 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--dataset", default="ml-100k")
    args = ap.parse_args()

    import torch

    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.prompts import PromptRenderer
    from llm_recommender.ranker.examples import build_examples, split_tails
    from llm_recommender.ranker.hints import CollaborativeHints
    from llm_recommender.ranker.scorer import cf_zscores
    from llm_recommender.ranker.soft_tokens import fit_item_model
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    torch.set_num_threads(1)
    ds = load_dataset(args.dataset, args.data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    valid = llmrank_cases(ds, split="valid", n_users=60, n_candidates=20, seed=0, splits=splits)
    prefixes = split_tails(seqs, 5)
    t0 = time.perf_counter()
    item = fit_item_model("sequence", space, TrainingData(space, [s for s in prefixes if len(s)], seed=0),
                          {"text": "none", "model": {"epochs": 15, "patience": None}})
    print(f"item model fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    hints = CollaborativeHints.fit(space, prefixes, "als", None, 0)
    examples = build_examples(seqs, hints, tail=5, history=10, retrieval_history=50, candidates=20, hard=0,
                              hard_pool=50, seed=0)

    def score(history: list, candidates: list) -> np.ndarray:
        return item.score_items([history], [candidates])[0]

    items = space.items
    train = [ndcg10(cf_zscores(score, [items[r] for r in ex["cf_history"][-50:]],
                               [items[r] for r in ex["candidates"]]), ex["target"]) for ex in examples[:400]]
    val = [ndcg10(cf_zscores(score, PromptRenderer.chronological(c.request.history)[-50:], list(c.request.candidates)),
                  c.ground_truth_index) for c in valid]
    print(f"z alone NDCG@10: training examples {np.mean(train):.4f} (400), validation {np.mean(val):.4f} ({len(val)})")


if __name__ == "__main__":
    main()
