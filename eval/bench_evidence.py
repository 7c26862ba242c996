"""What the evidence step costs: ``rank(..., reasons=True)`` on a fitted bundle, and ``gather_evidence`` alone.

    OMP_NUM_THREADS=1 python eval/bench_evidence.py --bundle BUNDLE --out eval/results/evidence/NAME.json

One test user of ML-100K (seeded), the same request each run: over its 20 LLMRank candidates and over the
catalogue (candidates omitted: retrieval), top 10, ``reasons=True``; ``--runs`` timed runs after one warm-up,
median reported. ``gather_evidence`` reads what scoring kept (``details["parts"][c]["history_links"]``) where a
component puts it there, and asks the component (``explain``) otherwise; ``evidence_from`` says which.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from llm_recommender import Recommender
from llm_recommender.data import load_dataset
from llm_recommender.data.splits import llmrank_cases
from llm_recommender.explain import gather_evidence

try:
    from llm_recommender.explain.evidence import history_links
except ImportError:  # the code before evidence read what scoring kept
    history_links = None


def _median_ms(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/ml-100k"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rec = Recommender.load(args.bundle)
    case = llmrank_cases(load_dataset("ml-100k", args.data), split="test", n_users=1, n_candidates=20, seed=args.seed)[0]
    out: dict = {"command": " ".join(sys.argv), "bundle": str(args.bundle), "runs": args.runs,
                 "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
                 "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                              if line.startswith("model name")), "?")}
    for mode in ("candidates", "catalogue"):
        req = case.request.model_copy(update={"top_k": 10, "reasons": True, **({"candidates": []} if mode == "catalogue" else {})})
        req = rec._with_candidates(req)  # the same candidates every run, retrieval outside the timed gather
        scorer = rec.scorer("fused")
        (result,) = scorer.score_many([req])
        order = result.ranking()[:10]
        kept = [c for c in rec.bundle.fusion.components if c in rec.bundle.components]
        out[mode] = {
            "candidates": len(req.candidates),
            "rank_reasons_ms": _median_ms(lambda: rec.rank_request(req), args.runs),  # noqa: B023
            "rank_no_reasons_ms": _median_ms(lambda: rec.rank_request(req.model_copy(update={"reasons": False})), args.runs),  # noqa: B023
            "gather_evidence_ms": _median_ms(lambda: gather_evidence(rec.bundle, req, result, order), args.runs),  # noqa: B023
            "evidence_from": {c: "details" if history_links and history_links(result, c) is not None else "explain"
                              for c in kept},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
