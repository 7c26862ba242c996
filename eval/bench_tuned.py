"""Evaluate a tuned generative scorer: test NDCG@10 on the LLMRank cases and a position-bias sweep.

    .venv/bin/python eval/bench_tuned.py --model eval/runs/tune-pointwise/model --strategy pointwise \\
        --users 40 --sweep-users 5 --out eval/results/tune/pointwise.json

Uses the first ``--users`` of the 200 users sampled with seed 0 (the same cases as
``llm-rec eval --users 200 --seed 0 --llm-users N``). The sweep moves the ground truth to
``--positions`` evenly spaced positions for the first ``--sweep-users`` users.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--strategy", default="pointwise")
    ap.add_argument("--data-dir", default="/work/shared/data/ml-100k")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--history", type=int, default=5, help="history items in the prompt (as in training)")
    ap.add_argument("--sweep-users", type=int, default=5)
    ap.add_argument("--positions", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import llmrank_cases, position_variants
    from llm_recommender.metrics import ranking_metrics, target_rank
    from llm_recommender.recommender import Recommender

    ds = load_dataset("ml-100k", args.data_dir)
    cases = llmrank_cases(ds, split="test", n_users=200, seed=0)[: args.users]
    rec = Recommender(model=args.model, max_history=args.history, threads=1)
    scorer = rec.scorer(args.strategy)
    t = time.perf_counter()
    res = scorer.score_many([c.request for c in cases])
    secs = time.perf_counter() - t
    ranks = [target_rank(r.scores, c.ground_truth_index) for r, c in zip(res, cases)]
    out = {
        "command": " ".join(sys.argv),
        "model": args.model,
        "strategy": args.strategy,
        "users": len(cases),
        "history": args.history,
        "test": {k: round(v, 4) for k, v in ranking_metrics(ranks).items()},
        "seconds_per_user": round(secs / len(cases), 2),
    }
    print(json.dumps(out), file=sys.stderr)
    positions = sorted({int(x) for x in np.round(np.linspace(0, 19, args.positions))})
    sweep = {p + 1: [] for p in positions}
    for c in cases[: args.sweep_users]:
        variants = position_variants(c)
        got = scorer.score_many([variants[p].request for p in positions])
        for p, r in zip(positions, got):
            sweep[p + 1].append(target_rank(r.scores, variants[p].ground_truth_index))
    out["position_sweep"] = {
        "users": args.sweep_users,
        "ndcg@10_by_position": {p: round(ranking_metrics(r)["ndcg@10"], 4) for p, r in sweep.items()},
        "hr@1_by_position": {p: round(ranking_metrics(r)["hr@1"], 4) for p, r in sweep.items()},
    }
    out["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    ).stdout.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
