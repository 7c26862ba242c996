"""Benchmark: the representation scorer against the baselines, and a calibrated hybrid (ML-100K, LLMRank).

    .venv/bin/python eval/bench_representation.py --data-dir /work/shared/data/ml-100k --out eval/runs/representation

Trains the head (interactions before each user's validation target), scores the 200
sampled users' validation and test cases, fits Platt and the hybrid on validation only,
and reports test NDCG@10 / HR@10 / MRR, ECE, and wall times to OUT/results.json.
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
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default="/work/shared/data/ml-100k")
    ap.add_argument("--out", type=Path, default=Path("eval/results/representation"))
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--pooling", default="mean")
    ap.add_argument("--no-embedding", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from llm_recommender.baselines import make_baseline
    from llm_recommender.calibration import FeatureLogisticCalibrator, FeatureSet, HybridScorer, fit_calibrator
    from llm_recommender.data import load_dataset
    from llm_recommender.evaluation.metrics import ece, ranking_metrics, target_rank
    from llm_recommender.evaluation.protocols import leave_one_out, llmrank_cases
    from llm_recommender.recommender import Recommender
    from llm_recommender.representation import HeadConfig, ItemEncoder, fit_head
    from llm_recommender.scorers import RepresentationScorer

    times: dict[str, float] = {}
    ds = load_dataset(args.dataset, args.data_dir)
    splits = leave_one_out(ds)
    cases = {
        s: llmrank_cases(ds, split=s, n_users=args.users, seed=args.seed, splits=splits) for s in ("valid", "test")
    }
    reqs = {s: [c.request for c in cs] for s, cs in cases.items()}
    cutoffs = {s: [c.target_timestamp for c in cs] for s, cs in cases.items()}
    labels = {s: [list(c.labels) for c in cs] for s, cs in cases.items()}

    t = time.perf_counter()
    rec = Recommender(**({"model": args.model} if args.model else {}))
    b = rec.backend
    times["model_load_s"] = time.perf_counter() - t
    encoder = ItemEncoder(
        b.model, b.tokenizer, rec.renderer, model_name=b.model_name, layer=args.layer, pooling=args.pooling
    )
    config = HeadConfig(model=b.model_name, layer=encoder.layer, pooling=args.pooling)
    head, _ctx = fit_head(ds, encoder, config, splits=splits, log=lambda m: print(m, file=sys.stderr))
    head.save(args.out / "head")
    times["head_fit_s"] = head.record["total_seconds"]

    pop = make_baseline("popularity").fit(ds.column("interactions", "item_id"), ds.column("interactions", "timestamp"))
    comps = {"representation": RepresentationScorer(b, rec.renderer, rec.settings, head=head), "popularity": pop}
    if not args.no_embedding:
        comps["embedding"] = make_baseline("embedding", recency_decay=0.9)

    def ndcg(results, split):
        ranks = [target_rank(r.scores, c.ground_truth_index) for r, c in zip(results, cases[split])]
        m = ranking_metrics(ranks)
        return {k: round(v, 4) for k, v in m.items() if k in ("ndcg@10", "hr@10", "mrr", "ndcg@5", "hr@1")}

    results: dict[str, dict] = {}
    out_res: dict[str, dict] = {}
    for name, scorer in comps.items():
        t = time.perf_counter()
        res = {}
        for s in ("valid", "test"):
            res[s] = (
                scorer.score_many(reqs[s], cutoffs=cutoffs[s]) if name == "popularity" else scorer.score_many(reqs[s])
            )
        times[f"{name}_score_400_requests_s"] = time.perf_counter() - t
        out_res[name] = res
        results[name] = {"test": ndcg(res["test"], "test"), "valid": ndcg(res["valid"], "valid")}
        print(name, results[name], file=sys.stderr)

    # calibration of the representation scorer (Platt, fitted on validation only)
    rep = out_res["representation"]
    y_test = np.concatenate([np.asarray(l, float) for l in labels["test"]])
    p_raw = np.concatenate([r.probabilities for r in rep["test"]])
    platt = fit_calibrator("platt", rep["valid"], labels["valid"])
    p_cal = np.concatenate([platt.transform(r.scores, r.probabilities) for r in rep["test"]])
    results["representation"]["ece_test_raw"] = round(float(ece(y_test, p_raw)), 4)
    results["representation"]["ece_test_platt"] = round(float(ece(y_test, p_cal)), 4)

    # hybrids: fitted on validation outputs only (components are already scored: combine)
    for combo in (("representation", "popularity"), tuple(comps)):
        key = "hybrid(" + "+".join(combo) + ")"
        t = time.perf_counter()
        shell = HybridScorer({c: comps[c] for c in combo}, FeatureLogisticCalibrator([{"name": "_", "theta": [0.0]}]))
        fv = shell.features({c: out_res[c]["valid"] for c in combo})
        yv = np.concatenate([np.asarray(l, float) for l in labels["valid"]])
        shell.calibrator = FeatureLogisticCalibrator.fit(FeatureSet.concat(fv), yv, l2=1.0)
        hyb = shell.combine({c: out_res[c]["test"] for c in combo})
        results[key] = {
            "test": ndcg(hyb, "test"),
            "ece_test": round(float(ece(y_test, np.concatenate([r.probabilities for r in hyb]))), 4),
        }
        shell.calibrator.save(args.out / f"{key}.json")
        times[f"{key}_fit_s"] = time.perf_counter() - t
        print(key, results[key], file=sys.stderr)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "command": " ".join(sys.argv),
        "commit": commit,
        "model": b.model_name,
        "dtype": b.dtype_name,
        "users": args.users,
        "seed": args.seed,
        "head": head.record | {"layer": head.config.layer},
        "results": results,
        "times_s": {k: round(v, 1) for k, v in times.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
