"""Cost of one llm_ranker request (20 candidates, one forward pass) by prompt variant, on the real model.

Variants: text (titles + CF hints), titles + soft item tokens (ALS), soft item tokens alone
(``titles: false``). Scoring cost does not depend on training, so the projection is untrained
(seeded) and the model is the embedded SmolLM2-135M as shipped: this measures prompt length and
latency only, never ranking quality.

Usage: OMP_NUM_THREADS=1 python eval/bench_llm_ranker_prompts.py [--requests 10] [--threads 1]
       [--dtype auto] [--out eval/results/llm-ranker/prompt_variants.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/work/shared/data/ml-100k")
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default="eval/results/llm-ranker/prompt_variants.json")
    args = ap.parse_args()

    import torch

    from llm_recommender.backends.configs import TransformersConfig
    from llm_recommender.backends.transformers_backend import TransformersBackend
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.model_store import DEFAULT_MODEL
    from llm_recommender.ranker.hints import CollaborativeHints
    from llm_recommender.ranker.scorer import RankerPrompter, RankerScorer
    from llm_recommender.ranker.soft_tokens import ItemTokens, fit_item_table
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    torch.set_num_threads(args.threads)
    ds = load_dataset("ml-100k", args.data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    data = TrainingData(space=space, sequences=[s for s in seqs if len(s)], seed=0)
    cases = llmrank_cases(ds, split="valid", n_users=args.requests, n_candidates=20, seed=0, history_len=50,
                          splits=splits)
    requests = [c.request for c in cases]
    hints = CollaborativeHints.fit(space, data.sequences, "als", None, 0)
    table, known = fit_item_table("als", space, data)
    backend = TransformersBackend(TransformersConfig(model=DEFAULT_MODEL, dtype=args.dtype, threads=args.threads))  # pyright: ignore[reportArgumentType]
    tokens = ItemTokens(table, known, int(backend.model.config.hidden_size), seed=0)

    variants = {
        "text: titles + hints": {"item_tokens": None, "titles": True},
        "titles + hints + ALS item tokens": {"item_tokens": tokens, "titles": True},
        "ALS item tokens + hints, no titles": {"item_tokens": tokens, "titles": False},
    }
    rows = []
    for name, v in variants.items():
        prompter = RankerPrompter(backend, space, hints, history=10, max_per_pass=20, show_hints=True,
                                  retrieval_history=50, item_tokens=v["item_tokens"], titles=v["titles"])
        scorer = RankerScorer(prompter)
        scorer.score_many(requests[:1])  # warm-up
        seconds, prompt_tokens = [], []
        for req in requests:
            before = backend.stats.prompt_tokens
            t0 = time.perf_counter()
            res = scorer.score_many([req])[0]
            seconds.append(time.perf_counter() - t0)
            prompt_tokens.append(backend.stats.prompt_tokens - before)
            assert res.details["passes"] == 1
        rows.append({"variant": name, "requests": len(requests), "p50_seconds": round(statistics.median(seconds), 3),
                     "mean_seconds": round(statistics.fmean(seconds), 3),
                     "mean_prompt_tokens": round(statistics.fmean(prompt_tokens), 1)})
        print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": commit, "cpu": cpu_name(),
              "threads": args.threads, "dtype": backend.dtype_name, "model": DEFAULT_MODEL, "history": 10,
              "candidates": 20, "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
