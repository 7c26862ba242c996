#!/usr/bin/env python
"""``llm-rec batch`` on the bundled ml-latest-small sample: Ray workers against the in-process loop.

Builds the input (one row per user: the 50 ratings before the held-out last movie, and 20
candidates: the held-out movie + 19 random unseen ones), then runs
the job with each executor into a fresh folder and prints users/s.

    python eval/bench_batch.py --backend fake                        # all 610 users
    python eval/bench_batch.py --users 40 --threads 1                 # the real default model
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

from llm_recommender.batch import BatchConfig, RecommenderSpec, read_output, run_batch
from llm_recommender.sample_data import movies, ratings_by_user


def item(mid: str) -> dict:
    m = movies()[mid]
    genres = [g for g in m["genres"].split("|") if g != "(no genres listed)"]
    return {"id": mid, "title": m["title"], **({"attributes": {"genres": genres}} if genres else {})}


def write_input(path: Path, users: int | None, seed: int = 0) -> int:
    """Every user: the last rated movie held out (some users have no liked one to hold out, as the
    demo does), the 50 ratings before it as history, and it + 19 random unseen movies as candidates."""
    rng = random.Random(seed)
    catalogue = sorted(movies(), key=int)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for uid in sorted(ratings_by_user(), key=int)[:users]:
            ratings = ratings_by_user()[uid]
            seen = {r.movie_id for r in ratings}
            negatives = []
            while len(negatives) < 19:
                mid = rng.choice(catalogue)
                if mid not in seen and mid not in negatives:
                    negatives.append(mid)
            candidates = [ratings[-1].movie_id, *negatives]
            rng.shuffle(candidates)
            history = [item(r.movie_id) | {"rating": r.rating, "timestamp": r.timestamp} for r in ratings[-51:-1]]
            fh.write(json.dumps({"user_id": uid, "history": history, "candidates": [item(c) for c in candidates]}) + "\n")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=None, help="first N users (default: all 610)")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the in-process loop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--executors", default="ray,loop")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        users = write_input(work / "users.jsonl", args.users)
        kwargs = {k: v for k, v in {"backend": args.backend}.items() if v}
        for name in args.executors.split(","):
            out = work / f"out-{name}"
            cfg = BatchConfig(input=work / "users.jsonl", output=out, batch_size=args.batch_size, use_ray=name == "ray",
                              num_workers=args.workers, cpus_per_worker=args.cpus_per_worker, progress=False)
            spec_kwargs = kwargs if name == "ray" or args.threads is None else {**kwargs, "threads": args.threads}
            summary = run_batch(cfg, RecommenderSpec(kwargs=spec_kwargs))
            rows = read_output(out)
            assert len(rows) == users == len({r["user_id"] for r in rows}), (len(rows), users)
            print(json.dumps({"executor": summary.executor, "users": users, **summary.model_dump(),
                              "threads": spec_kwargs.get("threads"), "errors_in_output": sum(r["error"] is not None for r in rows)}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
