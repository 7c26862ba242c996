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
  ``permutation_mode="cyclic"``), with the label prior too;
* ``cyclic K + label prior + order-invariant`` (``--invariant K``): the same, the shifts
  starting from an order fixed by the candidate ids (``order_invariant=True``), so every
  variant of a user gets the same prompts and the held-out item's position cannot matter.

``--configs`` runs a subset by name, e.g. to add a configuration to a comparison:

    python eval/bench_position.py --users 8 --cyclic "" --invariant 20 --configs "plain,cyclic 20 + label prior + order-invariant" \
        --out eval/results/bench_position_invariant.json

All orders of one user share the history, so the backend computes it once per call and the
candidate lists continue it packed (see transformers_backend.py).
Reported per configuration: NDCG@10 at each position, its spread (best - worst position)
and its mean; the mean must stay above chance (about 0.23 here with 20 candidates),
otherwise flatness was bought with noise.

    python eval/bench_position.py --users 8 --cyclic 4,20 --out eval/results/bench_position.json

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


def position_r2(rows: list[list[int]]) -> float:
    """Share of the variance of the held-out item's rank explained by its position (one-way ANOVA R²):
    1 when the position alone decides the rank; (P - 1) / (N - 1) expected when it plays no part."""
    flat = [r for row in rows for r in row]
    mean = statistics.fmean(flat)
    total = sum((r - mean) ** 2 for r in flat)
    by_pos = [statistics.fmean(row[p] for row in rows) for p in range(len(rows[0]))]
    between = len(rows) * sum((m - mean) ** 2 for m in by_pos)
    return between / total if total else 1.0


def position_r2_by_chance(candidates: int, users: int) -> float:
    """What :func:`position_r2` is expected to be when the position plays no part."""
    return (candidates - 1) / (users * candidates - 1)


def summarise(args, rec, configs, ranks, seconds, n_users: int) -> dict:
    rows = []
    for name in configs:
        per_pos = [statistics.fmean(ndcg10(ranks[name][u][p]) for u in range(n_users)) for p in range(args.candidates)]
        rows.append({"config": name, "ndcg@10_by_position": per_pos, "spread": max(per_pos) - min(per_pos),
                     "mean": statistics.fmean(per_pos), "position_r2": position_r2(ranks[name][:n_users]),
                     "seconds_per_user": seconds[name] / n_users})
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": rec.model_name,
            "dtype": rec.backend.dtype_name, "attention": rec.backend.attention_implementation,
            "users": n_users, "candidates": args.candidates, "history": args.history,
            "chance_ndcg@10": chance_ndcg10(args.candidates),
            "position_r2_without_position_effect": position_r2_by_chance(args.candidates, n_users),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "rows": rows, "ranks": ranks}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--cyclic", default="4", help="cyclic shifts averaged in the debiased configurations, comma-separated "
                    "(default 4; the number of candidates moves every candidate through every position)")
    ap.add_argument("--invariant", default="", help="cyclic shifts averaged in order-invariant configurations, comma-separated "
                    "(default: none)")
    ap.add_argument("--configs", default="", help="only these configurations, comma-separated names (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=Path("eval/results/bench_position.json"))
    ap.add_argument("--resummarise", action="store_true",
                    help="only recompute the derived figures of an existing --out file from its ranks (no model run)")
    args = ap.parse_args()
    if args.resummarise:
        result = json.loads(args.out.read_text())
        for row in result["rows"]:
            row["position_r2"] = position_r2(result["ranks"][row["config"]])
        result["position_r2_without_position_effect"] = position_r2_by_chance(result["candidates"], result["users"])
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print_table(result)
        return

    from llm_recommender import Recommender
    from llm_recommender.protocol import parse_request
    from llm_recommender.sample_data import ratings_by_user, sample_request

    rec = Recommender(backend="transformers", threads=args.threads)
    configs = {
        "plain": {},
        "label prior": {"label_prior": True},
        **{f"cyclic {k} + label prior": {"label_prior": True, "permutations": k, "permutation_mode": "cyclic"}
           for k in _ints(args.cyclic)},
        **{f"cyclic {k} + label prior + order-invariant": {"label_prior": True, "permutations": k, "permutation_mode": "cyclic",
                                                          "order_invariant": True} for k in _ints(args.invariant)},
    }
    if args.configs:
        wanted = [name.strip() for name in args.configs.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in configs]
        if unknown:
            raise SystemExit(f"--configs: unknown {unknown}; known: {list(configs)}")
        configs = {name: configs[name] for name in wanted}
    from llm_recommender.scorers import strategy_class

    scorers = {name: strategy_class("verbalizer")(rec.backend, rec.renderer, rec.config_for("verbalizer", **upd))
               for name, upd in configs.items()}
    users = [u for u in map(str, range(1, 611)) if len(ratings_by_user().get(u, [])) > args.history + 1][: args.users]
    if not users:
        raise SystemExit(f"no user of the sample has more than {args.history + 1} ratings")
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
        result = summarise(args, rec, configs, ranks, seconds, i + 1)  # after every user: a cut-short run keeps its users
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written to {args.out}")


def print_table(result: dict) -> None:
    rows = result["rows"]
    print(f"| config | NDCG@10 spread (best - worst position) | mean NDCG@10 (chance {result['chance_ndcg@10']:.3f}) | "
          f"rank variance explained by position (none: {result['position_r2_without_position_effect']:.2f}) | "
          "position 1 | position 10 | position 20 | s/user (20 positions) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        pos = r["ndcg@10_by_position"]
        print(f"| {r['config']} | {r['spread']:.3f} | {r['mean']:.3f} | {r['position_r2']:.2f} | {pos[0]:.3f} | {pos[9]:.3f} | {pos[-1]:.3f} | "
              f"{r['seconds_per_user']:.1f} |")


if __name__ == "__main__":
    main()
