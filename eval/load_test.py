#!/usr/bin/env python
"""Load test of ``llm-rec serve`` over loopback: many concurrent clients, bounded in count and time.

Every answer is checked: a 200 must be a well-formed ranking of the request's candidates
(native RankResponse, chat.completion, or SSE chunks), and any other status must carry the
OpenAI error shape. Prints requests/s, p50/p90/p99 latency and status counts; exits 1 on
any 5xx, malformed answer or transport error.

Replicas: ``--spawn --replicas N`` starts N ``llm-rec serve`` processes on free loopback ports
(same bundle, backend and settings) and sends the requests round-robin across them (request i
to replica i mod N), as a load balancer would; ``--url A,B`` does the same over servers you
started. The result has the total and, under ``replicas``, each replica's requests, statuses
and latency. With ``--backend openai --base-url URL`` every replica ranks through the same
upstream OpenAI-compatible server, e.g. one ``llm-rec serve-model`` (vLLM).

    python eval/load_test.py --spawn --backend fake --clients 32 --requests 400
    python eval/load_test.py --url http://127.0.0.1:8000 --api-key KEY --clients 4 --requests 8
    python eval/load_test.py --spawn --replicas 2 --backend fake --clients 16 --requests 200
    python eval/load_test.py --spawn --replicas 2 --backend openai --base-url http://127.0.0.1:8001/v1 --clients 8 --requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ENDPOINTS = ("native", "chat", "stream")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_titles() -> list[str]:
    """Real titles from the bundled MovieLens sample (synthetic ones if it is missing)."""
    path = REPO / "llm_recommender" / "sample_data" / "ml-latest-small" / "movies.csv"
    try:
        with path.open(encoding="utf-8") as f:
            return [row["title"] for row in csv.DictReader(f)][:2000]
    except OSError:
        return [f"Movie {i} ({1950 + i % 70})" for i in range(2000)]


def make_request(rng: random.Random, titles: list[str], n_candidates: int, n_history: int, reasons: bool) -> dict:
    ids = rng.sample(range(len(titles)), n_candidates + n_history)
    hist = [{"id": str(i), "title": titles[i], "rating": rng.choice([3.5, 4.0, 4.5, 5.0])} for i in ids[:n_history]]
    cands = [{"id": str(i), "title": titles[i]} for i in ids[n_history:]]
    return {"history": hist, "candidates": cands, "top_k": min(5, n_candidates), "reasons": reasons}


def check_ranking(data: dict, request: dict) -> str | None:
    items = data.get("items")
    if not isinstance(items, list) or not items:
        return "no items"
    ids = [it.get("id") for it in items]
    if len(set(ids)) != len(ids) or not set(ids) <= {c["id"] for c in request["candidates"]}:
        return f"ranked ids are not distinct candidate ids: {ids}"
    if [it.get("rank") for it in items] != list(range(1, len(items) + 1)) or len(items) != request["top_k"]:
        return "ranks are not 1..top_k"
    if not all(isinstance(it.get("probability"), (int, float)) and 0 <= it["probability"] <= 1 for it in items):
        return "probability outside [0, 1]"
    if request["reasons"] and not all(isinstance(it.get("reason"), str) for it in items):
        return "missing reasons"
    return None


def check_answer(kind: str, status: int, body: str, request: dict) -> str | None:
    """None when the answer is well-formed, else what is wrong with it."""
    try:
        if status != 200:
            err = json.loads(body)["error"]
            return None if {"message", "type", "param", "code"} <= set(err) else "bad error shape"
        if kind == "native":
            return check_ranking(json.loads(body), request)
        if kind == "chat":
            data = json.loads(body)
            if data.get("object") != "chat.completion" or data["usage"]["total_tokens"] < 0:
                return "not a chat.completion"
            return check_ranking(json.loads(data["choices"][0]["message"]["content"]), request)
        lines = [ln[6:] for ln in body.split("\n") if ln.startswith("data: ")]
        if not lines or lines[-1] != "[DONE]":
            return "stream does not end with [DONE]"
        chunks = [json.loads(ln) for ln in lines[:-1]]
        if any(c.get("object") != "chat.completion.chunk" for c in chunks):
            return "not chat.completion.chunk"
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        return check_ranking(json.loads(content), request)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"malformed: {type(exc).__name__}: {exc}"


async def run_load(urls: list[str], model: str, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    titles = load_titles()
    kinds = list(ENDPOINTS) if args.endpoint == "mixed" else [args.endpoint]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    plan = [(kinds[i % len(kinds)], make_request(rng, titles, args.candidates, args.history, args.reasons))
            for i in range(args.requests)]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    per_replica: list[dict[str, Any]] = [{"url": u, "latencies": [], "statuses": Counter()} for u in urls]
    next_index = 0
    deadline = time.monotonic() + args.max_seconds
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < len(plan) and time.monotonic() < deadline:
            index = next_index
            kind, request = plan[index]
            next_index += 1
            replica = per_replica[index % len(urls)]  # round robin
            url = replica["url"]
            if kind == "native":
                path, payload = "/v1/recommendations", request
            else:
                path = "/v1/chat/completions"
                payload = {"model": model, "messages": [{"role": "user", "content": json.dumps(request)}],
                           "stream": kind == "stream"}
            start = time.perf_counter()
            try:
                r = await http.post(url + path, json=payload, headers=headers)
                body = r.text
            except httpx.HTTPError as exc:
                statuses["transport-error"] += 1
                replica["statuses"]["transport-error"] += 1
                problems[f"{type(exc).__name__}"] += 1
                continue
            latencies.append(time.perf_counter() - start)
            replica["latencies"].append(latencies[-1])
            statuses[str(r.status_code)] += 1
            replica["statuses"][str(r.status_code)] += 1
            problem = check_answer(kind, r.status_code, body, request)
            if problem:
                problems[problem[:120]] += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(args.clients)))
    wall = time.perf_counter() - t0
    def pct(lat: list[float], p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    def latency_ms(values: list[float]) -> dict[str, float | None]:
        lat = sorted(values)
        return {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": round(lat[-1] * 1000, 1) if lat else None}

    def answered(counts: Counter[str]) -> int:
        return sum(v for k, v in counts.items() if k != "transport-error")

    done = answered(statuses)
    server_errors = sum(v for k, v in statuses.items() if k.isdigit() and int(k) >= 500)
    return {
        "requests": done, "planned": len(plan), "clients": args.clients, "wall_s": round(wall, 2),
        "requests_per_s": round(done / wall, 2) if wall else None,
        "latency_ms": latency_ms(latencies),
        "statuses": dict(statuses), "server_errors": server_errors, "malformed": dict(problems),
        "replicas": [{"url": r["url"], "requests": answered(r["statuses"]), "statuses": dict(r["statuses"]),
                      "latency_ms": latency_ms(r["latencies"])} for r in per_replica],
        "endpoint": args.endpoint, "candidates": args.candidates, "history": args.history, "reasons": args.reasons,
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """One ``llm-rec serve`` on a free loopback port, not yet waited for."""
    port = free_port()
    cmd = [sys.executable, "-m", "llm_recommender.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--backend", args.backend, "--max-queue", str(max(64, args.clients)), "--log-level", "warning"]
    if args.base_url:
        cmd += ["--base-url", args.base_url]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.model:
        cmd += ["--model", args.model]
    if args.strategy:
        cmd += ["--strategy", args.strategy]
    if getattr(args, "bundle", None):
        cmd += ["--bundle", str(args.bundle)]
    if args.max_batch is not None:
        cmd += ["--max-batch", str(args.max_batch)]
    if args.batch_wait_ms is not None:
        cmd += ["--batch-wait-ms", str(args.batch_wait_ms)]
    env = dict(os.environ, **({"LLM_REC_SERVER_API_KEY": args.api_key} if args.api_key else {}))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    return proc, f"http://127.0.0.1:{port}"


def spawn_servers(args: argparse.Namespace) -> list[tuple[subprocess.Popen, str]]:
    """``--replicas`` servers started together (each loads its own model), returned once all are healthy."""
    servers = [start_server(args) for _ in range(args.replicas)]
    waiting = dict(servers)
    deadline = time.monotonic() + args.startup_timeout
    while waiting and time.monotonic() < deadline:
        for proc, url in list(waiting.items()):
            if proc.poll() is not None:
                stop_servers(servers)
                raise SystemExit(f"server {url} exited with {proc.returncode} before it was ready")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    del waiting[proc]
            except httpx.HTTPError:
                pass
        time.sleep(0.25)
    if waiting:
        stop_servers(servers)
        raise SystemExit(f"{len(waiting)} of {len(servers)} servers not ready after {args.startup_timeout} s")
    return servers


def stop_servers(servers: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in servers:  # SIGTERM to all first: they drain in parallel
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, _ in servers:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000, or several, comma-separated, "
                                     "sent round-robin (loopback only)")
    where.add_argument("--spawn", action="store_true", help="start `llm-rec serve` on a free loopback port, stop it after")
    p.add_argument("--replicas", type=int, default=1, help="--spawn: servers to start, requests sent round-robin (default: 1)")
    p.add_argument("--backend", default="fake", help="--spawn: backend (default: fake)")
    p.add_argument("--base-url", help="--spawn --backend openai: the upstream OpenAI-compatible server every replica "
                                      "ranks through, e.g. `llm-rec serve-model`'s http://127.0.0.1:8001/v1")
    p.add_argument("--bundle", type=Path, help="--spawn: a fitted bundle folder each replica serves")
    p.add_argument("--threads", type=int, help="--spawn: torch threads per replica (default: the server's, all cores)")
    p.add_argument("--model", help="--spawn: model (default: the embedded SmolLM2)")
    p.add_argument("--strategy", help="--spawn: default strategy")
    p.add_argument("--max-batch", type=int, help="--spawn: queued requests ranked together (server default: 8; 1: one at a time)")
    p.add_argument("--batch-wait-ms", type=float, help="--spawn: how long a free slot waits for more requests (server default: 5)")
    p.add_argument("--api-key", default=os.environ.get("LLM_REC_SERVER_API_KEY"), help="Bearer token (default: env LLM_REC_SERVER_API_KEY)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    p.add_argument("--requests", type=int, default=320, help="total requests (default: 320)")
    p.add_argument("--max-seconds", type=float, default=120, help="stop sending after this long (default: 120)")
    p.add_argument("--endpoint", choices=(*ENDPOINTS, "mixed"), default="mixed",
                   help="native /v1/recommendations, chat, stream (chat with stream=true), or mixed (default)")
    p.add_argument("--candidates", type=int, default=10, help="candidates per request (default: 10)")
    p.add_argument("--history", type=int, default=5, help="history items per request (default: 5)")
    p.add_argument("--reasons", action="store_true", help="ask for reasons (one generation per ranked item)")
    p.add_argument("--timeout", type=float, default=120, help="per-request timeout in s (default: 120)")
    p.add_argument("--startup-timeout", type=float, default=300, help="--spawn: wait this long for /health (default: 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the result (with command and commit) to this file")
    args = p.parse_args(argv)
    urls = [u.strip().rstrip("/") for u in args.url.split(",") if u.strip()] if args.url else []
    if any(httpx.URL(u).host not in ("127.0.0.1", "localhost", "::1") for u in urls):
        p.error("--url must be loopback addresses")
    if args.replicas < 1 or (args.replicas > 1 and not args.spawn):
        p.error("--replicas N needs --spawn (with --url, list the servers: --url A,B)")
    if args.base_url and args.backend != "openai":
        p.error("--base-url is the upstream of --backend openai")

    servers: list[tuple[subprocess.Popen, str]] = []
    if args.spawn:
        servers = spawn_servers(args)
        urls = [url for _, url in servers]
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        models = {httpx.get(u + "/v1/models", headers=headers, timeout=10).json()["data"][0]["id"] for u in urls}
        if len(models) != 1:
            raise SystemExit(f"the replicas serve different models: {sorted(models)}")
        model = models.pop()
        result = asyncio.run(run_load(urls, model, args))
    finally:
        stop_servers(servers)
    result.update(model=model, backend=args.backend if args.spawn else None, base_url=args.base_url, commit=git_commit(),
                  command=" ".join(["python", "eval/load_test.py", *(argv if argv is not None else sys.argv[1:])]),
                  machine=f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["server_errors"] == 0 and not result["malformed"] and "transport-error" not in result["statuses"]
    ok = ok and all(r["requests"] > 0 for r in result["replicas"][: result["planned"]])  # every replica answered
    return 0 if ok and result["requests"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
