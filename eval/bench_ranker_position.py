"""Position sweep of a bundle component (the trained ``llm_ranker``): does the held-out item's place in the
candidate list change its rank?

For each of ``--users`` test cases (LLMRank protocol, seed 0), the same 20 candidates are presented 20 times
with the held-out item moved to position 1, 2, ..., 20 and the others in their order; the component scores
each list once (no permutation averaging). Reported: NDCG@10 at each position, its spread and mean, and the
position R²: the share of the held-out item's rank variance (within users) that its position explains, a
one-way analysis over the 20 positions after removing each user's mean. Without any position effect that
share is not zero but noise; the no-effect level is the 95th percentile of the same R² with the positions
shuffled within each user (``--null`` shuffles).

    python eval/bench_ranker_position.py --bundle OUT/bundle --data-dir DIR --users 10 \\
        --out eval/results/llm-ranker-readout/position.json

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _results import cpu_name, print_and_write  # eval/_results.py (the script's folder is on the path)


def position_r2(ranks: np.ndarray) -> float:
    """``ranks``: users x positions. Share of the within-user variance explained by the position means."""
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    total = float((centred**2).sum())
    if total == 0:
        return 0.0
    between = float(ranks.shape[0] * ((centred.mean(axis=0)) ** 2).sum())
    return between / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--component", default="llm_ranker", help="a component of the bundle, or 'fused'")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--null", type=int, default=1000, help="within-user shuffles for the no-effect level")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from llm_recommender.bundle.bundle import Bundle
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases

    bundle = Bundle.load(args.bundle)
    scorer = bundle.scorer(args.component)
    if scorer is None:
        sys.exit(f"{args.bundle} has no {args.component!r}")
    if args.threads and hasattr(scorer, "config"):
        scorer.config = scorer.config.model_copy(update={"threads": args.threads})  # type: ignore[union-attr]
    ds = load_dataset(args.dataset, args.data_dir)
    cases = llmrank_cases(ds, split="test", n_users=args.users, seed=args.seed, splits=leave_one_out(ds))
    n = len(cases[0].request.candidates)
    ranks = np.zeros((len(cases), n))
    t0 = time.perf_counter()
    for u, case in enumerate(cases):
        cands = list(case.request.candidates)
        target = cands.pop(case.ground_truth_index)
        requests = [case.request.model_copy(update={"candidates": [*cands[:p], target, *cands[p:]]}) for p in range(n)]
        for p, res in enumerate(scorer.score_many(requests)):
            s = np.asarray(res.scores, dtype=float)
            ranks[u, p] = 1 + int((s > s[p]).sum())  # ties never favour the held-out item: count >, then add ties
            ranks[u, p] += int((s == s[p]).sum()) - 1
        print(f"user {u + 1}/{len(cases)}: ranks by position {ranks[u].astype(int).tolist()}", flush=True)
    seconds = time.perf_counter() - t0
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0)
    r2 = position_r2(ranks)
    rng = np.random.default_rng(args.seed)
    null = [position_r2(np.stack([rng.permutation(row) for row in ranks])) for _ in range(args.null)]
    out = {
        "bundle": str(args.bundle), "component": args.component, "dataset": args.dataset, "users": len(cases),
        "candidates": n, "ndcg@10_by_position": [round(float(x), 4) for x in ndcg.mean(axis=0)],
        "ndcg@10_mean": round(float(ndcg.mean()), 4),
        "ndcg@10_spread": round(float(ndcg.mean(axis=0).max() - ndcg.mean(axis=0).min()), 4),
        "position_r2": round(r2, 4), "no_effect_r2_p95": round(float(np.percentile(null, 95)), 4),
        "no_effect_r2_mean": round(float(np.mean(null)), 4),
        "users_constant_rank": int(sum(len(set(row.tolist())) == 1 for row in ranks)),
        "seconds": round(seconds, 1), "requests": len(cases) * n, "cpu": cpu_name(), "command": " ".join(["python", *sys.argv]),
    }
    print_and_write(out, args.out)


if __name__ == "__main__":
    main()
