"""Fit the sequence component alone as ``llm-rec fit`` does and print its validation NDCG@10 and time.

Runs against whichever llm_recommender is first on PYTHONPATH, so the same command compares two trees:

    PYTHONPATH=/work/main python eval/seq_fit_check.py --dataset ml-100k --data-dir /work/shared/data/ml-100k
    PYTHONPATH=.          python eval/seq_fit_check.py --dataset ml-100k --data-dir /work/shared/data/ml-100k

ID-only (``text: none``): no item vectors are computed. The validation cases are those of
``llm-rec fit`` (``valid_users`` drawn users, 20 candidates, same seed); the number is the best
epoch's NDCG@10 on the first ``valid_cases`` of them, the early-stopping metric.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--valid-users", type=int, default=2000)
    ap.add_argument("--model", default="{}", help="JSON changes to the component's model settings")
    args = ap.parse_args()
    import torch

    import llm_recommender
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace
    from llm_recommender.scorers.learned.sequence import SequenceComponent

    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, args.data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    data = TrainingData(space=space, sequences=[s for s in seqs if len(s)], seed=args.seed)
    data.validation = llmrank_cases(ds, split="valid", n_users=min(args.valid_users, len(splits)), n_candidates=20,
                                    seed=args.seed, history_len=50, splits=splits)
    model = {"epochs": 30, "patience": 3, "id_dropout": 0.1} | json.loads(args.model)
    comp = SequenceComponent(space, {"text": "none", "model": model})
    t0 = time.perf_counter()
    comp.fit(data)
    rec = comp.model.record
    print(json.dumps({"code": llm_recommender.__file__, "dataset": args.dataset, "seed": args.seed,
                      "threads": args.threads, "fit_seconds": round(time.perf_counter() - t0, 1),
                      "epochs_run": rec["epochs_run"], "best_epoch": rec["best_epoch"],
                      "best_valid_ndcg10": round(rec["best_valid"], 4),
                      "config": comp.model.config.model_dump(exclude={"text_dim"})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
