#!/usr/bin/env python
"""The fit's item-representation step: one process against ``--ray-address local`` (Ray Data actors).

Encodes every item of a catalogue (default: ML-100K's 1,682 films) with the default model, each way from an
empty representation cache, and writes items/s, start-up and the largest difference between the two vector sets:

    python eval/bench_fit_ray.py --dataset ml-100k --data-dir /work/shared/data/ml-100k --workers 2

``--threads`` is the single-process run's torch threads (default: torch's, all cores, as ``llm-rec fit``);
each Ray worker runs 1 thread on 1 CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llm_recommender.backends.configs import TransformersConfig
from llm_recommender.backends.transformers_backend import TransformersBackend
from llm_recommender.bundle.fit_ray import ray_item_vectors
from llm_recommender.data import load_dataset
from llm_recommender.model_store import DEFAULT_MODEL
from llm_recommender.prompts import PromptRenderer
from llm_recommender.provenance import git_commit
from llm_recommender.ray_cluster import ray_cluster
from llm_recommender.scorers.learned.encoder import ItemEncoder


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="only the first N items")
    ap.add_argument("--out", type=Path, default=Path("eval/results/fit-ray"))
    ap.add_argument("--name", default="bench_fit_ray", help="the JSON's file name under --out")
    args = ap.parse_args()

    ds = load_dataset(args.dataset, args.data_dir)
    items = [ds.item(i) for i in ds.item_ids][: args.limit]
    result: dict = {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(), "cpu": cpu(),
                    "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "dataset": ds.name, "items": len(items), "model": args.model}

    t0 = time.perf_counter()
    backend = TransformersBackend(TransformersConfig(model=args.model, threads=args.threads))
    enc = ItemEncoder.from_backend(backend, PromptRenderer(backend), batch_size=32, cache=False)
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    single = enc.encode_items(items)
    enc_s = time.perf_counter() - t1
    import torch

    result["single_process"] = {"threads": torch.get_num_threads(), "model_load_s": round(load_s, 2),
                                "encode_s": round(enc_s, 2), "items_per_s": round(len(items) / enc_s, 1),
                                "total_s": round(load_s + enc_s, 2), "dtype": backend.hidden_state_identity()["dtype"]}
    del backend, enc
    print(json.dumps(result["single_process"]), file=sys.stderr)

    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        with ray_cluster(None, num_cpus=args.workers, who="bench") as ray:
            started = time.perf_counter() - t0
            vectors, _, remote = ray_item_vectors(ray, args.model, items, workers=args.workers, cache=Path(cache),
                                                  log=lambda m: lines.append((time.perf_counter() - t0, m)))
            total = time.perf_counter() - t0
    first = next((t for t, m in lines if "item vectors on Ray:" in m), None)
    result["ray"] = {"workers": args.workers, "threads_per_worker": 1, "cluster_start_s": round(started, 2),
                     "total_s": round(total, 2), "items_per_s_total": round(len(items) / total, 1),
                     "first_progress_line_s": round(first, 2) if first else None, "computed": remote.computed,
                     "progress": [f"{t:.1f}s {m}" for t, m in lines]}
    diff = float(np.abs(vectors - single).max())
    result["max_abs_difference"] = diff
    result["cosine_min"] = float(np.min((vectors * single).sum(1) / (np.linalg.norm(vectors, axis=1)
                                                                      * np.linalg.norm(single, axis=1))))
    print(json.dumps(result, indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
