"""Trained CF components (implicit ALS, BPR, item-kNN) beside popularity and co-occurrence, as a bundle serves them.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python eval/bench_cf.py --out eval/results/cf

LLMRank protocol (200 users, seed 0, 20 candidates). Every model is the bundle's component
(``llm_recommender.scorers``), fitted on each user's interactions before their validation
target, as ``llm-rec fit`` does: no validation or test target. Hyperparameters
are chosen by a small grid on validation NDCG@10; test NDCG@10/HR@10/MRR are reported for
the chosen ones (pessimistic ties). Factor models are scored two ways: folded in from the
request's history (what a bundle without user data can do) and with the trained user
factors (evaluation-only reference; they were fitted without the validation target, which
the test history contains). Popularity is static counts over the same training data.

Cold start: ``cold_start_items(share=0.1, seed=0)`` are removed from training
the chosen configs are refitted and ranked on ``cold_start_cases``. CF knows none of the
candidates, so every candidate ties and pessimistic ties give 0.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATASETS = {
    "ml-100k": ("ml-100k", "/work/shared/data/ml-100k"),
    "amazon-beauty": ("amazon-beauty", "/work/shared/data/amazon-beauty-2014-5core"),
}
GRIDS: dict[str, list[dict[str, Any]]] = {
    "itemknn": [
        {"weighting": w, "K": k} for w, k in itertools.product(("cosine", "tfidf", "bm25"), (20, 100, 400, 1000))
    ],
    "als": [
        {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
        for f, r, a in itertools.product((32, 64, 128), (0.05, 1.0), (1.0, 10.0))
    ],
    "bpr": [
        {"factors": f, "learning_rate": lr, "iterations": 100} for f, lr in itertools.product((32, 64), (0.01, 0.05))
    ],
}
# BPR's fold-in has its own settings; they need no refit, so they are searched per fit
BPR_FOLD_IN = [
    {"fold_in_regularization": r, "fold_in_confidence": c, "fold_in_bias_offset": o}
    for o, r, c in itertools.product((False, True), (10.0, 100.0, 1000.0), (10.0, 100.0, 1000.0))
]


def evaluate(scorer, cases, user_vectors=None) -> dict[str, float]:
    """Ranking metrics of a component (or, with ``user_vectors``, of its CF model scored with them)."""
    from llm_recommender.metrics import ranking_metrics, target_rank

    requests = [c.request for c in cases]
    results = scorer.score_many(requests) if user_vectors is None else scorer.model.score_many(requests, user_vectors)
    m = ranking_metrics(target_rank(r.scores, c.ground_truth_index) for r, c in zip(results, cases))
    return {k: round(m[k], 4) for k in ("ndcg@10", "hr@10", "mrr")}


class Training:
    """The components' training data: each user's interactions before their validation target (less ``cold``)."""

    def __init__(self, ds, splits, cold=frozenset()):
        import numpy as np

        from llm_recommender.scorers.component import TrainingData
        from llm_recommender.scorers.item_space import ItemSpace

        self.space = ItemSpace([ds.item(i) for i in ds.item_ids])
        self.users = list(splits)  # user code k (the CF models' user key str(k)) -> user id
        seqs = [[self.space.index[x.item_id] for x in splits[u].before("valid") if x.item_id not in cold]
                for u in self.users]
        self.data = TrainingData(self.space, [np.asarray(s, dtype=np.int64) for s in seqs])
        self.code = {u: str(k) for k, u in enumerate(self.users)}
        self.interactions = sum(len(s) for s in seqs)

    def fit(self, name: str, options: dict[str, Any] | None = None):
        from llm_recommender.scorers import scorer_class

        config = None if options is None else {"options": options}
        start = time.perf_counter()
        component = scorer_class(name)(self.space, config).fit(self.data)
        component.fit_s = time.perf_counter() - start
        return component

    def trained_vectors(self, component, cases):
        vecs = [component.model.trained_user_vector(self.code[c.user_id]) for c in cases]
        return vecs if all(v is not None for v in vecs) else None


def run_dataset(key: str, n_users: int, seed: int, log) -> dict[str, Any]:
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import cold_start_cases, cold_start_items, leave_one_out, llmrank_cases
    from llm_recommender.metrics import expected_random

    name, path = DATASETS[key]
    ds = load_dataset(name, path)
    splits = leave_one_out(ds)
    train = Training(ds, splits)
    valid = llmrank_cases(ds, split="valid", n_users=n_users, seed=seed, splits=splits)
    test = llmrank_cases(ds, split="test", n_users=n_users, seed=seed, splits=splits)
    out: dict[str, Any] = {
        "dataset": key,
        "training_interactions": train.interactions,
        "users": len(splits),
        "items": len(ds.item_ids),
        "random_expected": {k: round(v, 4) for k, v in expected_random(20).items() if k in ("ndcg@10", "hr@10", "mrr")},
        "models": {},
    }
    for label in ("popularity", "cooccurrence"):
        component = train.fit(label)
        out["models"][label] = {"valid": evaluate(component, valid), "test": evaluate(component, test),
                                "fit_s": round(component.fit_s, 2)}
        log(f"{key} {label}: {out['models'][label]}")

    chosen: dict[str, dict[str, Any]] = {}
    for model_name, grid in GRIDS.items():
        rows = []
        best_fold = best_trained = None
        for config in grid:
            model = train.fit(model_name, config)
            # trained user factors do not depend on the fold-in settings: once per fit
            vecs = train.trained_vectors(model, valid)
            if vecs is not None:
                vt = evaluate(model, valid, vecs)
                if best_trained is None or vt["ndcg@10"] > best_trained[0]["ndcg@10"]:
                    best_trained = (vt, config)
            for extra in BPR_FOLD_IN if model_name == "bpr" else [{}]:
                model.model.config = model.model.config.model_copy(update=extra)
                full = {**config, **extra}
                v = evaluate(model, valid)
                row = {"config": full, "valid_fold_in": v, "fit_s": round(model.fit_s, 2)}
                if vecs is not None:
                    row["valid_trained_users"] = vt
                if best_fold is None or v["ndcg@10"] > best_fold[0]["ndcg@10"]:
                    best_fold = (v, full)
                rows.append(row)
            log(f"{key} {model_name} {config}: fit {model.fit_s:.2f}s, last {rows[-1]}")
        assert best_fold is not None
        model = train.fit(model_name, best_fold[1])
        entry: dict[str, Any] = {
            "chosen_config": best_fold[1],
            "valid": best_fold[0],
            "test": evaluate(model, test),
            "fit_s": round(model.fit_s, 2),
            "grid": rows,
        }
        if best_trained is not None:
            # the same fit scored by fold-in too, with the chosen fold-in settings (BPR's are separate)
            fold_settings = {k: v for k, v in best_fold[1].items() if k.startswith("fold_in_")}
            ref = train.fit(model_name, {**best_trained[1], **fold_settings})
            entry["trained_users"] = {
                "chosen_config": best_trained[1],
                "valid": best_trained[0],
                "test": evaluate(ref, test, train.trained_vectors(ref, test)),
                "test_fold_in_same_config": evaluate(ref, test),
            }
        out["models"][model_name] = entry
        chosen[model_name] = best_fold[1]
        log(f"{key} {model_name} chosen {best_fold[1]}: test {entry['test']} trained {entry.get('trained_users')}")

    cold = cold_start_items(ds, share=0.1, seed=seed)
    cold_train = Training(ds, splits, cold)
    cold_cases = cold_start_cases(ds, split="test", n_users=n_users, seed=seed, splits=splits, cold=cold)
    cold_out: dict[str, Any] = {"cold_items": len(cold), "training_interactions": cold_train.interactions, "models": {}}
    for model_name, config in {"popularity": None, "cooccurrence": None, **chosen}.items():
        cold_out["models"][model_name] = evaluate(cold_train.fit(model_name, config), cold_cases)
    out["cold_start"] = cold_out
    log(f"{key} cold start: {cold_out}")
    return out


def write_markdown(results: dict[str, Any], path: Path) -> None:
    lines = [
        "# Trained CF baselines (implicit) vs popularity and co-occurrence",
        "",
        f"Command: `{results['command']}`  ",
        f"Commit: `{results['commit']}`, implicit {results['implicit']}, {results['machine']}",
        "",
        (
            "LLMRank protocol, 200 users, seed 0, 20 candidates; fitted on the validation-time training split "
            "(no validation or test target); hyperparameters chosen on validation NDCG@10; pessimistic ties. "
            "Fold-in = user vector from the request's history only (what a bundle without user data serves); "
            "trained users = the fitted user factors (evaluation-only reference)."
        ),
        "",
    ]
    for ds in results["datasets"]:
        lines += [
            f"## {ds['dataset']}",
            "",
            (
                f"{ds['training_interactions']} training interactions, "
                f"{ds['users']} users, {ds['items']} items. Random: NDCG@10 {ds['random_expected']['ndcg@10']}."
            ),
            "",
        ]
        lines += [
            "| model | config | valid NDCG@10 | test NDCG@10 | test HR@10 | test MRR | fit s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in ds["models"].items():
            cfg = json.dumps(m.get("chosen_config", {})).replace("|", "/")
            t = m["test"]
            lines.append(
                f"| {name} | `{cfg}` | {m['valid']['ndcg@10']} | {t['ndcg@10']} | {t['hr@10']} | {t['mrr']} | {m['fit_s']} |"
            )
            if "trained_users" in m:
                tu = m["trained_users"]
                t = tu["test"]
                cfg = json.dumps(tu["chosen_config"]).replace("|", "/")
                lines.append(
                    f"| {name}, trained user factors | `{cfg}` | {tu['valid']['ndcg@10']} | {t['ndcg@10']} | {t['hr@10']} "
                    f"| {t['mrr']} | |"
                )
                lines.append(
                    f"| {name}, fold-in on that fit | | | {tu['test_fold_in_same_config']['ndcg@10']} | "
                    f"{tu['test_fold_in_same_config']['hr@10']} | {tu['test_fold_in_same_config']['mrr']} | |"
                )
        cs = ds["cold_start"]
        lines += [
            "",
            f"Cold start ({cs['cold_items']} cold items, {cs['training_interactions']} training interactions "
            "without them; test cases): "
            + ", ".join(f"{k} {v['ndcg@10']}" for k, v in cs["models"].items())
            + " (NDCG@10; every candidate ties, pessimistic ties rank the target last).",
            "",
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,amazon-beauty", help=f"comma list of {', '.join(DATASETS)}")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("eval/results/cf"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import implicit

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    results = {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit.stdout.strip(),
        "implicit": implicit.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "datasets": [run_dataset(k, args.users, args.seed, log) for k in args.datasets.split(",")],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    write_markdown(results, args.out / "results.md")
    log(f"wrote {args.out / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
