"""Does a short history want other component weights? A fitted bundle's components on the fit's own validation
cases: NDCG@10 of each by history length, and the cross-validated gain of the fusion's history-length terms
(issue 28, item 6) for a few shapes of "shortness", beside the one the fit tries (``1/sqrt(1+h)``).

    python eval/probe_history_terms.py --bundle OUT/bundle --dataset amazon-beauty --data-dir DIR \\
        --out eval/results/history-terms/beauty.json

The validation cases are rebuilt as the fit drew them (seed, users, history length from bundle.json). Nothing is
refitted: the components score as saved.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
from _results import cpu_name, print_and_write  # eval/_results.py (the script's folder is on the path)

BUCKETS = [(0, 4), (5, 6), (7, 10), (11, 20), (21, 10**9)]
SHAPES: dict[str, Callable[[int], float]] = {
    "1/sqrt(1+h) (the fit's)": lambda h: 1.0 / np.sqrt(1.0 + h),
    "1/(1+h)": lambda h: 1.0 / (1.0 + h),
    "h <= 5": lambda h: float(h <= 5),
    "h <= 10": lambda h: float(h <= 10),
    "log(1+h)": lambda h: float(np.log1p(h)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from llm_recommender.bundle import Bundle
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers.fused import cv_case_ndcg, ndcg10, per_user_standard_error, score_with_reference

    bundle = Bundle.load(args.bundle)
    fit = bundle.manifest.fit["config"]
    if bundle.fused.fusion.case_aware:
        sys.exit("a case-aware (cold-start) bundle: this probe rebuilds warm validation cases only")
    ds = load_dataset(args.dataset, args.data_dir)
    splits = leave_one_out(ds)
    n_valid = min(fit.get("valid_users") or len(splits), len(splits))
    cases = llmrank_cases(ds, split="valid", n_users=n_valid, n_candidates=fit.get("n_candidates", 20),
                          seed=fit.get("seed", 0), history_len=fit.get("max_history", 50), splits=splits)
    requests = [c.request for c in cases]
    labels = [np.asarray(c.labels, dtype=float) for c in cases]
    gt = [c.ground_truth_index for c in cases]
    lengths = np.array([len(r.history) for r in requests])
    kept = bundle.fused.fusion.components
    reference = bundle.fused.reference
    results = {c: score_with_reference(bundle.components[c], requests, reference) for c in kept}

    by_length = {}
    for lo, hi in BUCKETS:
        idx = np.flatnonzero((lengths >= lo) & (lengths <= hi))
        if len(idx):
            by_length[f"{lo}-{hi if hi < 10**9 else 'max'}"] = {
                "cases": int(len(idx)), **{c: round(ndcg10([results[c][k] for k in idx], [gt[k] for k in idx]), 4)
                                          for c in kept}}
    base = cv_case_ndcg(results, labels, kept, seed=fit.get("seed", 0), l2=fit.get("l2", 1.0))
    gains = {}
    for name, shape in SHAPES.items():
        diff = cv_case_ndcg(results, labels, kept, seed=fit.get("seed", 0), l2=fit.get("l2", 1.0),
                            short=[shape(int(h)) for h in lengths]) - base
        gains[name] = {"gain": round(float(diff.mean()), 4), "standard_error": round(per_user_standard_error(diff, None), 4)}
    out = {"bundle": args.bundle, "dataset": args.dataset, "validation_cases": len(cases), "components": kept,
           "history_length": {"median": float(np.median(lengths)), "share_at_most_5": round(float((lengths <= 5).mean()), 3)},
           "ndcg@10_by_history_length": by_length, "fused_cv_ndcg@10_without_terms": round(float(base.mean()), 4),
           "history_terms_cv_gain": gains, "cpu": cpu_name(), "command": " ".join(["python", *sys.argv])}
    print_and_write(out, args.out)


if __name__ == "__main__":
    main()
