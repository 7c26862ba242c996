#!/usr/bin/env python
"""End-to-end ranking throughput, per-request latency and memory: transformers vs the vLLM
engine vs a vLLM server (``openai`` backend), side by side in one run.

Workload: ML-100K (``u.data``/``u.item``), the first ``--users`` users (by id); for each,
the most recent rated movie is held out, the ``--history`` ratings before it are the
history, and the candidates are the held-out movie plus random unseen movies
(``--candidates`` in all, seeded). Every backend ranks the same requests with the same
strategy (default: verbalizer, one forward pass per request) and the same model.

Concurrency ``c`` (``--concurrency 1,4,16``) means c requests in flight:
* in-process backends (transformers, vllm engine): requests arrive in groups of c and
  each group is ranked by one ``rank_many`` call (what a batching server does); a
  request's latency is its group's time;
* the vLLM server: c client threads each send one request at a time through the
  ``openai`` backend; the server batches what is in flight.

Threads are equal for every backend (``--threads``, default: all cores, ``os.cpu_count()``):
torch's intra-op threads for transformers, and on vLLM's CPU build the engine's OpenMP threads
bound to the first N allowed cores (``VLLM_CPU_OMP_THREADS_BIND``, e.g. ``0-1``; vLLM's own
``auto`` reserves one core for its scheduler, which on a 2-core machine leaves the model ONE
thread). Both are recorded in the JSON and the table. ``--strategy pointwise`` measures prefix
reuse: transformers' KV-cache reuse of the shared history prefix against vLLM's prefix caching.

Each backend runs in its own child process, one after another, so memory is its own:
peak RSS of that process (for the server: the client process plus the server's process
tree, peak of each). Start-up (model load / engine / server start) is reported apart
and excluded from throughput; one warm-up request precedes the timed runs.

    python eval/bench_backends.py --users 40 --concurrency 1,16 --dtype bfloat16
    python eval/bench_backends.py --users 40 --concurrency 1,16 --strategy pointwise
    python eval/bench_backends.py --users 3 --concurrency 1 --backends transformers   # smoke run

This is a benchmark, not a test: nothing asserts speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ml-100k"
BACKENDS = ("transformers", "vllm", "openai")


# ---- data: a minimal ML-100K reader (u.data tab-separated, u.item pipe-separated latin-1) ----
def load_ml100k(data_dir: Path) -> tuple[dict[str, list[tuple[str, float, int]]], dict[str, str]]:
    titles = {}
    with open(data_dir / "u.item", encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if len(parts) > 1:
                titles[parts[0]] = parts[1]
    ratings: dict[str, list[tuple[str, float, int]]] = {}
    with open(data_dir / "u.data", encoding="latin-1") as fh:
        for line in fh:
            user, item, rating, ts = line.split("\t")
            ratings.setdefault(user, []).append((item, float(rating), int(ts)))
    for rs in ratings.values():
        rs.sort(key=lambda r: (r[2], int(r[0])))
    return ratings, titles


def build_requests(data_dir: Path, users: int, candidates: int, history: int, seed: int) -> list[dict]:
    ratings, titles = load_ml100k(data_dir)
    rng = random.Random(seed)
    all_items = sorted(titles, key=int)
    out = []
    for user in sorted(ratings, key=int)[:users]:
        rs = ratings[user]
        target = rs[-1][0]
        seen = {r[0] for r in rs}
        cands = [target, *rng.sample([i for i in all_items if i not in seen], candidates - 1)]
        rng.shuffle(cands)
        out.append({
            "history": [{"id": i, "title": titles[i], "rating": r} for i, r, _ in rs[-history - 1 : -1]],
            "candidates": [{"id": i, "title": titles[i]} for i in cands],
            "top_k": 10,
            "_target": target,
        })
    return out


# ---- memory -------------------------------------------------------------------------------
def _proc_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
    return sorted(set(out))


class TreePeak:
    """Samples the summed RSS of a process tree; keeps the peak of the sum."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, sum(_proc_kib(p, "VmRSS") for p in _tree(self.pid)))
            self._stop.wait(0.5)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


# ---- one backend, in its own process -------------------------------------------------------
def cpu_bind(threads: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``threads`` OpenMP threads: the first allowed cores, e.g. '0-1' or '0,2'.

    A value the caller exported wins (the backend does not override it), so it is what is recorded.
    """
    if os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return os.environ["VLLM_CPU_OMP_THREADS_BIND"]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    chosen = cores[: max(1, threads)]
    if chosen == list(range(chosen[0], chosen[0] + len(chosen))):
        return str(chosen[0]) if len(chosen) == 1 else f"{chosen[0]}-{chosen[-1]}"
    return ",".join(str(c) for c in chosen)


def worker(args: argparse.Namespace) -> dict:
    from llm_recommender import Recommender

    requests = build_requests(Path(args.data_dir), args.users, args.candidates, args.history, args.seed)
    targets = [r.pop("_target") for r in requests]
    for r in requests:
        r["strategy"] = args.strategy
    opts = {"dtype": args.dtype, "threads": args.threads}
    bind = None  # vLLM's OpenMP binding (CPU build only; a CUDA build ignores it)
    server = tree = None
    t0 = time.perf_counter()
    if args.worker == "openai":
        from llm_recommender.backends.configs import VLLMConfig
        from llm_recommender.backends.vllm_backend import is_cpu_build, resolve_dtype
        from llm_recommender.backends.vllm_server import VLLMServer

        # Dev mode (loopback only) adds POST /reset_prefix_cache, used between the runs below.
        os.environ["VLLM_SERVER_DEV_MODE"] = "1"
        bind = cpu_bind(args.threads) if is_cpu_build() else None
        server = VLLMServer(VLLMConfig(dtype=args.dtype, cpu_threads_bind=bind)).start(timeout=600)
        tree = TreePeak(server.process.pid)
        rec = Recommender(backend="openai", base_url=server.url, **opts)
        dtype = resolve_dtype(args.dtype, is_cpu_build())
    else:
        if args.worker == "vllm":
            from llm_recommender.backends.vllm_backend import is_cpu_build

            bind = cpu_bind(args.threads) if is_cpu_build() else None
            opts["vllm_in_process"] = args.vllm_in_process
            opts["vllm_cpu_threads_bind"] = bind
            tree = TreePeak(os.getpid())  # the engine core may run in a child process
        rec = Recommender(backend=args.worker, **opts)
        dtype = getattr(rec.backend, "dtype_name", args.dtype)
    startup = time.perf_counter() - t0
    rec.rank_request(requests[0])  # warm-up (first-call compilation, caches), not timed

    def reset_prefix_cache() -> None:
        """Every run starts cold: a run must not reuse the previous run's prompts from vLLM's cache."""
        if args.worker == "vllm":
            rec.backend.llm.reset_prefix_cache()
        elif server is not None:
            import urllib.request

            url = f"http://{server.host}:{server.port}/reset_prefix_cache"
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).read()

    runs = []
    for c in args.concurrency:
        reset_prefix_cache()
        latencies: list[float] = []
        tops: list[str] = []
        start = time.perf_counter()
        if args.worker == "openai":
            def one(req: dict) -> tuple[float, str]:
                t = time.perf_counter()
                resp = rec.rank_request(req)
                return time.perf_counter() - t, resp.items[0].id

            with ThreadPoolExecutor(max_workers=c) as pool:
                for lat, top in pool.map(one, requests):
                    latencies.append(lat)
                    tops.append(top)
        else:
            for i in range(0, len(requests), c):
                group = requests[i : i + c]
                t = time.perf_counter()
                resps = rec.rank_many(group)
                latencies += [time.perf_counter() - t] * len(group)
                tops += [r.items[0].id for r in resps]
        wall = time.perf_counter() - start
        qs = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        runs.append({
            "concurrency": c, "users": len(requests), "wall_s": round(wall, 2),
            "users_per_s": round(len(requests) / wall, 3),
            "latency_p50_s": round(statistics.median(latencies), 3), "latency_p95_s": round(qs[18], 3),
            "hit_at_1": round(sum(t == g for t, g in zip(tops, targets)) / len(targets), 3),
            "top1": tops,
        })
        print(f"[{args.worker}] c={c}: {runs[-1]['users_per_s']} users/s, p50 {runs[-1]['latency_p50_s']} s", file=sys.stderr, flush=True)

    client_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    server_peak_kib = None
    if server is not None:
        server_peak_kib = tree.stop()
        server.stop()
    elif tree is not None:  # in-process backend with an engine child: the tree's peak
        client_peak_kib = max(client_peak_kib, tree.stop())
    rec.backend.close()
    engine = ("in-process" if args.vllm_in_process else "child process") if args.worker == "vllm" else None
    return {"backend": args.worker, "engine": engine, "dtype": dtype,
            "strategy": args.strategy, "threads": args.threads, "vllm_cpu_threads_bind": bind,
            "startup_s": round(startup, 1), "runs": runs,
            "client_peak_rss_gib": round(client_peak_kib / 2**20, 2),
            "server_peak_rss_gib": round(server_peak_kib / 2**20, 2) if server_peak_kib is not None else None}


def run_worker(backend: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", backend, "--users", str(args.users), "--candidates", str(args.candidates),
           "--history", str(args.history), "--seed", str(args.seed), "--strategy", args.strategy, "--dtype", args.dtype,
           "--threads", str(args.threads), "--data-dir", str(args.data_dir),
           *(["--vllm-in-process"] if args.vllm_in_process else []),
           "--concurrency", ",".join(str(c) for c in args.concurrency)]
    env = dict(os.environ, PYTHONPATH=str(REPO), VLLM_LOGGING_LEVEL=os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"))
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False)
    if proc.returncode != 0:
        return {"backend": backend, "error": f"worker exited with {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = ["| backend | strategy | dtype | threads | concurrency | users/s | p50 latency (s) | p95 latency (s) | HR@1 | start-up (s) | peak RSS (GiB) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if "error" in res:
            lines.append(f"| {res['backend']} | - | - | - | - | error: {res['error']} | | | | | |")
            continue
        name = {"transformers": "transformers (in-process)", "vllm": f"vLLM engine ({res.get('engine', 'child process')})",
                "openai": "vLLM server (openai backend)"}[res["backend"]]
        mem = f"{res['client_peak_rss_gib']}"
        if res["server_peak_rss_gib"] is not None:
            mem = f"{res['client_peak_rss_gib']} client + {res['server_peak_rss_gib']} server"
        threads = f"{res['threads']}" + (f" (bind {res['vllm_cpu_threads_bind']})" if res.get("vllm_cpu_threads_bind") else "")
        for run in res["runs"]:
            lines.append(f"| {name} | {res['strategy']} | {res['dtype']} | {threads} | {run['concurrency']} | {run['users_per_s']} | {run['latency_p50_s']} | "
                         f"{run['latency_p95_s']} | {run['hit_at_1']} | {res['startup_s']} | {mem} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--users", type=int, default=200, help="users of ML-100K (the first N by id) (default: 200)")
    p.add_argument("--candidates", type=int, default=20, help="candidates per request (default: 20)")
    p.add_argument("--history", type=int, default=20, help="history items per request (default: 20)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16],
                   help="requests in flight, comma-separated (default: 1,4,16)")
    p.add_argument("--backends", type=lambda s: s.split(","), default=list(BACKENDS),
                   help="comma-separated subset of transformers,vllm,openai (default: all three)")
    p.add_argument("--strategy", choices=("verbalizer", "pointwise", "listwise"), default="verbalizer",
                   help="scoring strategy (default: verbalizer, one forward pass per request; pointwise: a shared "
                        "history prefix and one suffix per candidate, which measures prefix reuse)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on AMX CPUs) | float32 | bfloat16 (default: auto)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="threads for EVERY backend: torch threads (transformers) and vLLM's bound OpenMP threads "
                        f"(CPU build) (default: all cores, os.cpu_count() = {os.cpu_count()})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm-in-process", action="store_true",
                   help="vLLM engine core in the benchmark process (VLLM_ENABLE_V1_MULTIPROCESSING=0) instead of a child")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help=f"ML-100K folder (default: {DEFAULT_DATA})")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per backend (default: 3600)")
    p.add_argument("--out", type=Path, default=None, help="also write the results (JSON) and the table (.md beside it)")
    p.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        print(json.dumps(worker(args)))
        return
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        p.error(f"unknown backends {sorted(unknown)}; valid: {', '.join(BACKENDS)}")
    results = []
    for backend in args.backends:
        print(f"== {backend}", file=sys.stderr, flush=True)
        results.append(run_worker(backend, args))
    ok = [r for r in results if "error" not in r]
    agreement = {}
    if len(ok) > 1:
        ref = ok[0]
        for other in ok[1:]:
            for r0, r1 in zip(ref["runs"], other["runs"]):
                same = sum(a == b for a, b in zip(r0["top1"], r1["top1"])) / len(r0["top1"])
                agreement[f"{other['backend']} vs {ref['backend']} (c={r0['concurrency']})"] = round(same, 3)
    md = table(results)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    header = (f"command: python eval/bench_backends.py {' '.join(sys.argv[1:])}\ncommit: {commit}; machine: {platform.machine()}, "
              f"{os.cpu_count()} CPUs; model: smollm2-135m-instruct; strategy: {args.strategy}; threads: {args.threads} "
              f"(vLLM CPU bind {cpu_bind(args.threads)}); {args.users} users, "
              f"{args.candidates} candidates, {args.history} history items")
    print(header)
    print(md)
    print("top-1 agreement with the first backend:", json.dumps(agreement))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for r in results:
            for run in r.get("runs", []):
                run.pop("top1", None)
        args.out.write_text(json.dumps({"command": header, "strategy": args.strategy, "threads": args.threads,
                                        "results": results, "top1_agreement": agreement}, indent=2))
        args.out.with_suffix(".md").write_text(header + "\n\n" + md + "\n")


if __name__ == "__main__":
    main()
