#!/usr/bin/env python
"""Position sweep: the held-out item at each of the 20 positions, before and after debiasing.

Workload as in eval/bench_latency.py: the embedded default model (transformers backend),
users of the bundled ml-latest-small sample (the held-out item is the user's latest liked
movie), a 50-item history and 20 candidates. For every user the candidate list is presented
20 times, with the held-out item moved to position 1, 2, ..., 20 and the others in their
order. Each configuration is the verbalizer scorer with the settings the pipeline serves
(one implementation, nothing averaged here):

* ``plain``: one order per request;
* ``label prior``: contextual calibration, the model's label prior measured once on a
  content-free list and divided out (``label_prior=True``);
* ``cyclic K``: K evenly spaced cyclic shifts averaged (``permutations=K``,
  ``permutation_mode="cyclic"``), with the label prior too.

All orders of one user share the history, so the backend computes it once per call and the
candidate lists continue it packed (see transformers_backend.py).
Reported per configuration: NDCG@10 at each position, its spread (best - worst position)
and its mean; the mean must stay above chance (about 0.23 here with 20 candidates),
otherwise flatness was bought with noise.

    python eval/bench_position.py --users 20 --out eval/results/bench_position.json

A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path


def ndcg10(rank: int) -> float:
    return 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0


def chance_ndcg10(n: int) -> float:
    return sum(ndcg10(r) for r in range(1, n + 1)) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--cyclic", type=int, default=4, help="cyclic shifts averaged in the debiased configuration (default 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path("eval/results/bench_position.json"))
    args = ap.parse_args()

    from llm_recommender import Recommender
    from llm_recommender.protocol import parse_request
    from llm_recommender.sample_data import ratings_by_user, sample_request

    rec = Recommender(backend="transformers", threads=args.threads)
    configs = {
        "plain": {},
        "label prior": {"label_prior": True},
        f"cyclic {args.cyclic} + label prior": {"label_prior": True, "permutations": args.cyclic, "permutation_mode": "cyclic"},
    }
    from llm_recommender.scorers import strategy_class

    scorers = {name: strategy_class("verbalizer")(rec.backend, rec.renderer, rec.config_for("verbalizer", **upd))
               for name, upd in configs.items()}
    users = [u for u in map(str, range(1, 611)) if len(ratings_by_user().get(u, [])) > args.history + 1][: args.users]
    ranks: dict[str, list[list[int]]] = {name: [] for name in configs}  # [user][position]
    seconds: dict[str, float] = dict.fromkeys(configs, 0.0)
    for i, user in enumerate(users):
        request, target = sample_request(user, args.candidates, args.history, seed=0, top_k=args.candidates, reasons=False)
        others = [c for c in request["candidates"] if c["id"] != target]
        gt = next(c for c in request["candidates"] if c["id"] == target)
        variants = [parse_request({**request, "candidates": others[:p] + [gt] + others[p:]}) for p in range(args.candidates)]
        for name, scorer in scorers.items():
            t = time.perf_counter()
            results = scorer.score_many(variants)
            seconds[name] += time.perf_counter() - t
            row = []
            for p, res in enumerate(results):
                order = sorted(range(args.candidates), key=lambda j: -res.scores[j])
                row.append(order.index(p) + 1)  # the held-out item sits at index p of variant p
            ranks[name].append(row)
        print(f"user {i + 1}/{len(users)}: " + ", ".join(f"{n} {seconds[n]:.0f}s" for n in configs), file=sys.stderr, flush=True)

    rows = []
    for name in configs:
        per_pos = [statistics.fmean(ndcg10(ranks[name][u][p]) for u in range(len(users))) for p in range(args.candidates)]
        rows.append({"config": name, "ndcg@10_by_position": per_pos, "spread": max(per_pos) - min(per_pos),
                     "mean": statistics.fmean(per_pos), "seconds_per_user": seconds[name] / len(users)})
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": rec.model_name,
              "dtype": rec.backend.dtype_name, "users": len(users), "candidates": args.candidates,
              "history": args.history, "chance_ndcg@10": chance_ndcg10(args.candidates),
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows, "ranks": ranks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| config | NDCG@10 spread (best - worst position) | mean NDCG@10 (chance {result['chance_ndcg@10']:.3f}) | "
          "position 1 | position 10 | position 20 | s/user (20 positions) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pos = r["ndcg@10_by_position"]
        print(f"| {r['config']} | {r['spread']:.3f} | {r['mean']:.3f} | {pos[0]:.3f} | {pos[9]:.3f} | {pos[-1]:.3f} | "
              f"{r['seconds_per_user']:.1f} |")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
