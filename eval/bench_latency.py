#!/usr/bin/env python
"""Latency, throughput, memory and compute efficiency of the scoring strategies.

Workload: the embedded default model (SmolLM2-135M-Instruct, transformers backend),
users of the bundled ml-latest-small sample with a 50-item history and 20 candidates.

Each configuration runs in its own child process so that peak memory (max RSS) is that
configuration's own. Per configuration it reports p50/p95 latency per request,
candidates scored per second, peak RSS, threads and dtype; for the single forward pass of
the verbalizer it also reports achieved GFLOP/s (FLOPs counted by
torch.utils.flop_counter) against torch.matmul GFLOP/s measured in the same process, with
the same threads and dtype. Pointwise with prefix reuse is compared with naive
per-candidate prompts in the same run, as a ratio.

    python eval/bench_latency.py                 # full table (about 10 minutes on 2 cores)
    python eval/bench_latency.py --quick         # a smoke run
    python eval/bench_latency.py --out eval/results/bench_latency.json

This is a benchmark, not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

USERS = [str(u) for u in range(1, 200)]


def _requests(n: int, candidates: int, history: int) -> list[dict]:
    from llm_recommender.sample_data import ratings_by_user, sample_request

    out = []
    for user in USERS:
        if len(ratings_by_user().get(user, [])) <= history + 1:
            continue
        out.append(sample_request(user, candidates, history, seed=0, top_k=candidates, reasons=False)[0])
        if len(out) == n:
            break
    return out


def matmul_gflops(dtype_name: str, repeats: int = 5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(1024, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 * 2048 * 2048 / best / 1e9


def forward_gflops(rec, request: dict) -> dict:
    """FLOPs of the verbalizer's single forward pass, counted, and the achieved rate."""
    from torch.utils.flop_counter import FlopCounterMode

    from llm_recommender.protocol import parse_request

    scorer = rec.scorer("verbalizer")
    req = parse_request(request)
    scorer.score(req)  # warm-up
    with FlopCounterMode(display=False) as counter:
        scorer.score(req)
    flops = counter.get_total_flops()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        scorer.score(req)
        times.append(time.perf_counter() - t)
    best = min(times)
    return {"forward_flops": flops, "forward_seconds": best, "forward_gflops": flops / best / 1e9,
            "prompt_tokens": rec.backend.count_tokens(rec.renderer.fit("verbalizer.j2", rec.renderer.history_views(req.history),
                                                                      candidates=[rec.renderer.item_view(c, label=lab) for c, lab in zip(req.candidates, "ABCDEFGHIJKLMNOPQRST")],
                                                                      labels=list("ABCDEFGHIJKLMNOPQRST")).text)}


def worker(cfg: dict) -> dict:
    """Run one configuration (in a child process) and return its measurements."""
    from llm_recommender import Recommender

    t0 = time.perf_counter()
    rec = Recommender(backend="transformers", threads=cfg["threads"], dtype=cfg["dtype"],
                      pointwise_prefix_reuse=cfg.get("prefix_reuse", True))
    load_s = time.perf_counter() - t0
    import torch

    reqs = _requests(cfg["n"] + 1, cfg["candidates"], cfg["history"])
    strategy = cfg["strategy"]
    rec.rank_request({**reqs[0], "strategy": strategy})  # warm-up, not timed
    lat = []
    fallbacks = 0
    for req in reqs[1:]:
        t = time.perf_counter()
        resp = rec.rank_request({**req, "strategy": strategy})
        lat.append(time.perf_counter() - t)
        fallbacks += resp.fallback_used
    out = {
        **cfg,
        "torch_threads": torch.get_num_threads(),
        "dtype_used": rec.backend.dtype_name,
        "load_s": load_s,
        "p50_s": statistics.median(lat),
        "p95_s": sorted(lat)[max(0, int(round(0.95 * len(lat))) - 1)],
        "mean_s": statistics.fmean(lat),
        "candidates_per_s": cfg["candidates"] * len(lat) / sum(lat),
        "fallbacks": fallbacks,
    }
    if cfg.get("flops"):
        out.update(forward_gflops(rec, reqs[0]))
        out["matmul_gflops"] = matmul_gflops(rec.backend.dtype_name)
        out["forward_vs_matmul"] = out["forward_gflops"] / out["matmul_gflops"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(cfg: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed for {cfg}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few requests per configuration (smoke run)")
    ap.add_argument("--n", type=int, default=20, help="timed requests per configuration (default 20)")
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("eval/results/bench_latency.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    n = 3 if args.quick else args.n
    base = {"candidates": args.candidates, "history": args.history}
    configs = []
    # Threads and dtype: measured on the single forward pass, to choose the defaults.
    for threads in (1, 2):
        for dtype in ("bfloat16", "float32"):
            configs.append({**base, "strategy": "verbalizer", "threads": threads, "dtype": dtype, "n": n, "flops": True})
    # Every strategy at the defaults (1 thread, auto dtype = bf16 on AMX CPUs).
    configs.append({**base, "strategy": "pointwise", "threads": 1, "dtype": "auto", "n": n})
    configs.append({**base, "strategy": "pointwise", "threads": 1, "dtype": "auto", "n": max(2, n // 4), "prefix_reuse": False})
    configs.append({**base, "strategy": "listwise", "threads": 1, "dtype": "auto", "n": max(2, n // 2)})

    rows = []
    for cfg in configs:
        print(f"running {cfg['strategy']} threads={cfg['threads']} dtype={cfg['dtype']} "
              f"prefix_reuse={cfg.get('prefix_reuse', True)} n={cfg['n']} ...", file=sys.stderr, flush=True)
        rows.append(run_child(cfg))

    reuse = next(r for r in rows if r["strategy"] == "pointwise" and r.get("prefix_reuse", True))
    naive = next(r for r in rows if r["strategy"] == "pointwise" and r.get("prefix_reuse") is False)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "pointwise_prefix_reuse_speedup": naive["p50_s"] / reuse["p50_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print("| strategy | threads | dtype | p50 s | p95 s | candidates/s | peak RSS MB | forward GFLOP/s | matmul GFLOP/s | forward/matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = r["strategy"] + ("" if r.get("prefix_reuse", True) else " (naive)")
        g = f"{r['forward_gflops']:.0f} | {r['matmul_gflops']:.0f} | {r['forward_vs_matmul']:.0%}" if "forward_gflops" in r else "- | - | -"
        print(f"| {name} | {r['torch_threads']} | {r['dtype_used']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | "
              f"{r['candidates_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {g} |")
    print(f"\npointwise prefix reuse vs naive per-candidate prompts: {result['pointwise_prefix_reuse_speedup']:.1f}x faster (p50)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
