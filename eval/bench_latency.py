#!/usr/bin/env python
"""Latency, throughput, memory and compute efficiency of the scoring strategies.

Workload: the embedded default model (SmolLM2-135M-Instruct, transformers backend),
users of the bundled ml-latest-small sample with a 50-item history and 20 candidates.

Each configuration runs in its own child process so that peak memory (max RSS) is that
configuration's own. Per configuration it reports p50/p95 latency per request,
candidates scored per second, peak RSS, threads and dtype; for the single forward pass of
the verbalizer it also reports achieved GFLOP/s against torch.matmul GFLOP/s measured in
the same process, with the same threads and dtype. The FLOPs are counted from the model's
shapes: linear layers, causal attention (the lower triangle, as the kernels compute it) and
the LM head for the one kept position; torch's FlopCounterMode figure is recorded beside it
(it counts whatever kernels ran). Pointwise with prefix reuse is compared with naive
per-candidate prompts (one call each) in the same run, as a ratio. Listwise rows use
constrained decoding (a valid permutation by construction) and report p50 against the
verbalizer's at the same threads and dtype, with draft-and-verify decoding (the default)
and without it (one forward pass per choice), and the forward passes per request. Ids are
chosen whole by default (one tree pass per slot); the "token choice" row decodes them token
by token, as vLLM does.

    python eval/bench_latency.py                 # full table (about 25 minutes on 2 cores)
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
LISTWISE = {
    "listwise ids": {"listwise_keys": "ids"},
    "listwise ids, token choice": {"listwise_keys": "ids", "listwise_key_choice": "token"},
    # drafts serve token-by-token choice only (ids chosen whole take one tree pass per slot)
    "listwise ids, token choice, no draft": {"listwise_keys": "ids", "listwise_key_choice": "token",
                                             "draft_rankings": False},
    "listwise labels": {"listwise_keys": "labels"},
    "listwise labels, no draft": {"listwise_keys": "labels", "draft_rankings": False},
    "listwise labels top-5": {"listwise_keys": "labels", "listwise_top_k": 5},
}


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


def analytic_flops(model, tokens: int) -> dict:
    """FLOPs of one causal prefill over ``tokens``, from the model's shapes: the linear layers
    (2 per weight per token), causal attention (QK^T and PV over the lower triangle only), and
    the LM head for the last token (the scorers keep only its logits)."""
    cfg = model.config
    hidden, layers, heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    kv_dim = cfg.num_key_value_heads * head_dim
    per_layer = hidden * heads * head_dim * 2 + hidden * kv_dim * 2 + 3 * hidden * cfg.intermediate_size
    linear = 2 * tokens * layers * per_layer
    attention = 2 * 2 * heads * head_dim * layers * tokens * (tokens + 1) / 2
    head = 2 * hidden * cfg.vocab_size
    return {"linear": linear, "attention": attention, "lm_head": head, "total": linear + attention + head}


def forward_gflops(rec, request: dict) -> dict:
    """FLOPs of the verbalizer's single forward pass (counted from the model's shapes, causal
    attention included) and the achieved rate."""
    from torch.utils.flop_counter import FlopCounterMode

    from llm_recommender.protocol import parse_request

    scorer = rec.scorer("verbalizer")
    req = parse_request(request)
    scorer.score(req)  # warm-up
    with FlopCounterMode(display=False) as counter:
        scorer.score(req)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        scorer.score(req)
        times.append(time.perf_counter() - t)
    best = min(times)
    labels = list("ABCDEFGHIJKLMNOPQRST")[: len(req.candidates)]
    text = rec.renderer.fit("verbalizer.j2", rec.renderer.history_views(req.history),
                            candidates=[rec.renderer.item_view(c, label=lab) for c, lab in zip(req.candidates, labels)],
                            labels=labels).text
    tokens = rec.backend.count_tokens(text)
    flops = analytic_flops(rec.backend.model, tokens)
    return {"forward_flops": flops["total"], "forward_flops_attention": flops["attention"],
            "forward_flops_counted": counter.get_total_flops(),  # torch's counter: whatever kernels ran
            "forward_seconds": best, "forward_gflops": flops["total"] / best / 1e9, "prompt_tokens": tokens}


def worker(cfg: dict) -> dict:
    """Run one configuration (in a child process) and return its measurements."""
    from llm_recommender import Recommender

    t0 = time.perf_counter()
    rec = Recommender(backend="transformers", threads=cfg["threads"], dtype=cfg["dtype"],
                      pointwise_prefix_reuse=cfg.get("prefix_reuse", True), **cfg.get("settings", {}))
    load_s = time.perf_counter() - t0
    import torch

    reqs = _requests(cfg["n"] + 1, cfg["candidates"], cfg["history"])
    strategy = cfg["strategy"]
    rec.rank_request({**reqs[0], "strategy": strategy})  # warm-up, not timed
    lat = []
    fallbacks = 0
    passes0 = rec.backend.stats.forward_passes
    for req in reqs[1:]:
        t = time.perf_counter()
        resp = rec.rank_request({**req, "strategy": strategy})
        lat.append(time.perf_counter() - t)
        fallbacks += resp.fallback_used
    out = {
        **cfg,
        "torch_threads": torch.get_num_threads(),
        "dtype_used": rec.backend.dtype_name,
        "attention": rec.backend.attention_implementation,
        "load_s": load_s,
        "p50_s": statistics.median(lat),
        "p95_s": sorted(lat)[max(0, int(round(0.95 * len(lat))) - 1)],
        "mean_s": statistics.fmean(lat),
        "candidates_per_s": cfg["candidates"] * len(lat) / sum(lat),
        "fallbacks": fallbacks,
        "forward_passes_per_request": (rec.backend.stats.forward_passes - passes0) / len(lat),
    }
    if cfg.get("flops"):
        out.update(forward_gflops(rec, reqs[0]))
        out["matmul_gflops"] = matmul_gflops(rec.backend.dtype_name)
        out["forward_vs_matmul"] = out["forward_gflops"] / out["matmul_gflops"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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
    # The CPU attention kernel `auto` did not pick (see backends/cpu_attention.py), on the same pass.
    from llm_recommender.backends.kit import cpu_has_amx

    other = "blocked" if cpu_has_amx() else "sdpa"
    configs.append({**base, "strategy": "verbalizer", "threads": os.cpu_count(), "dtype": "bfloat16", "n": n, "flops": True,
                    "settings": {"cpu_attention": other}, "label": f"verbalizer, cpu_attention={other}"})
    # Every strategy at the defaults (all cores, auto dtype = bf16 on CPUs with AMX / AVX512-BF16).
    threads = os.cpu_count()
    configs.append({**base, "strategy": "pointwise", "threads": threads, "dtype": "auto", "n": n})
    configs.append({**base, "strategy": "pointwise", "threads": threads, "dtype": "auto", "n": max(2, n // 4), "prefix_reuse": False})
    # Listwise, constrained decoding (a valid permutation by construction): the full ranking by
    # ids, by labels, and the top 5 by labels (the rest keep the verbalizer's order).
    for name, settings in LISTWISE.items():
        configs.append({**base, "strategy": "listwise", "threads": threads, "dtype": "auto", "n": max(2, n // 2),
                        "settings": settings, "label": name})

    rows = []
    for cfg in configs:
        print(f"running {cfg['strategy']} threads={cfg['threads']} dtype={cfg['dtype']} "
              f"prefix_reuse={cfg.get('prefix_reuse', True)} n={cfg['n']} ...", file=sys.stderr, flush=True)
        rows.append(run_child(cfg))

    reuse = next(r for r in rows if r["strategy"] == "pointwise" and r.get("prefix_reuse", True))
    naive = next(r for r in rows if r["strategy"] == "pointwise" and r.get("prefix_reuse") is False)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "pointwise_prefix_reuse_speedup": naive["p50_s"] / reuse["p50_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print("| strategy | threads | dtype | attention | p50 s | x verbalizer | p95 s | passes/request | candidates/s | fallbacks | "
          "peak RSS MB | forward GFLOP/s | matmul GFLOP/s | forward/matmul |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    top = max(r["torch_threads"] for r in rows)
    verb = next(r for r in rows if r["strategy"] == "verbalizer" and r["torch_threads"] == top
                and r["dtype_used"] == rows[-1]["dtype_used"])  # the verbalizer at the defaults
    for r in rows:
        name = r.get("label") or r["strategy"] + ("" if r.get("prefix_reuse", True) else " (naive)")
        g = f"{r['forward_gflops']:.0f} | {r['matmul_gflops']:.0f} | {r['forward_vs_matmul']:.0%}" if "forward_gflops" in r else "- | - | -"
        print(f"| {name} | {r['torch_threads']} | {r['dtype_used']} | {r['attention']} | {r['p50_s']:.3f} | {r['p50_s'] / verb['p50_s']:.2f} | "
              f"{r['p95_s']:.3f} | {r.get('forward_passes_per_request', float('nan')):.1f} | {r['candidates_per_s']:.1f} | {r['fallbacks']} | {r['peak_rss_mb']:.0f} | {g} |")
    print(f"\npointwise prefix reuse vs naive per-candidate prompts: {result['pointwise_prefix_reuse_speedup']:.1f}x faster (p50)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
