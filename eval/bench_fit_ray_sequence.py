#!/usr/bin/env python
"""The fit's sequence step: one process against Ray Train (``--ray-address local``, DDP over gloo on CPU).

Fits a bundle of the ``sequence`` component alone (ID-only: no item vectors, so no LLM) on a dataset, once in one
process per ``--threads`` value and once on a local Ray cluster of ``--workers`` one-CPU workers, and writes each
run's validation NDCG@10 (the component alone on the fit's validation cases), epochs, seconds and per-epoch history:

    python eval/bench_fit_ray_sequence.py --dataset ml-100k --data-dir /work/shared/data/ml-100k --workers 2 --epochs 20

The sequence model's settings are the component's defaults (``{"epochs": 30, "patience": 3, "id_dropout": 0.1}``)
with ``--epochs`` instead of 30.
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
from typing import Any

from llm_recommender.bundle import FitConfig, fit_bundle, read_manifest
from llm_recommender.provenance import git_commit
from llm_recommender.scorers.learned.sequence_model import SequenceModel


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run(args: argparse.Namespace, out: Path, **over: Any) -> dict[str, Any]:
    model = {"epochs": args.epochs, "patience": 3, "id_dropout": 0.1, "seed": args.seed}
    cfg = FitConfig(dataset=args.dataset, data_dir=args.data_dir, components=["sequence"], min_gain=-1.0,
                    seed=args.seed, progress=False, component_config={"sequence": {"model": model, "text": "none"}},
                    **over)
    lines: list[str] = []
    t0 = time.perf_counter()
    fit_bundle(cfg, out, log=lambda msg: (lines.append(msg), print(msg, file=sys.stderr, flush=True)))
    wall = time.perf_counter() - t0
    (rec,) = read_manifest(out).components
    record = SequenceModel.load(out / "components" / "sequence" / "model").record
    return {"fit": {k: v for k, v in over.items()}, "validation_ndcg@10": rec.validation["ndcg@10"],
            "component_fit_seconds": rec.fit_seconds, "fit_wall_seconds": round(wall, 1),
            "early_stopping_valid_ndcg@10": round(record["best_valid"], 4), "best_epoch": record["best_epoch"],
            "epochs_run": record["epochs_run"], "training_seconds": record["fit_seconds"],
            "ray_train": rec.ray_train, "history": record["history"], "log": lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="one single-process run per value")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("eval/results/fit-ray"))
    ap.add_argument("--name", default="bench_fit_ray_sequence", help="the JSON's file name under --out")
    args = ap.parse_args()

    result: dict[str, Any] = {"command": "python " + " ".join(sys.argv), "git_commit": git_commit(), "cpu": cpu(),
                              "cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                              "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLM_REC_CACHE_DIR"] = str(Path(tmp) / "cache")  # Ray Train's run folder: a fresh one
        for threads in args.threads:
            result["runs"][f"single_threads{threads}"] = run(args, Path(tmp) / f"one{threads}", threads=threads)
        result["load_average_before_ray"] = [round(x, 2) for x in os.getloadavg()]
        result["runs"][f"ray_workers{args.workers}"] = run(args, Path(tmp) / "ray", ray_address="local",
                                                           ray_workers=args.workers, threads=1)
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for name, r in result["runs"].items():
        print(f"{name}: validation NDCG@10 {r['validation_ndcg@10']:.4f} (early-stopping cases "
              f"{r['early_stopping_valid_ndcg@10']:.4f}), {r['epochs_run']} epochs, component fit "
              f"{r['component_fit_seconds']:.1f} s")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
