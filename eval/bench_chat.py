"""What a chat turn costs against /v1/recommendations for the same history, on one live server.

    python eval/bench_chat.py --bundle BUNDLE [--turns 30] [--out eval/results/bench_chat.json]

Spawns `llm-rec serve --bundle BUNDLE` (default model) on 127.0.0.1. For each first turn of the committed
dialogue set that the agent answers with a recommendation, it sends the sentence to /v1/chat/completions,
then the history the agent built (the linked titles, as the response's plan records them) with the same
top_k and reasons to /v1/recommendations, sequentially, after a warm-up. Reports p50/p95 of both and
their ratio (issue goal: chat <= 1.5x).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import git_commit, spawn_servers, stop_servers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--dialogues", default=str(ROOT / "eval/dialogues/dialogues.jsonl"))
    ap.add_argument("--turns", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the turns")
    ap.add_argument("--out", default=str(ROOT / "eval/results/bench_chat.json"))
    args = ap.parse_args()
    server_args = argparse.Namespace(backend="transformers", clients=1, model=None, strategy=None, max_batch=None,
                                     batch_wait_ms=None, api_key=None, startup_timeout=300, bundle=args.bundle,
                                     base_url=None, threads=None, replicas=1)
    servers = spawn_servers(server_args)
    url = servers[0][1]
    try:
        client = httpx.Client(base_url=url, timeout=120)
        model = client.get("/v1/models").json()["data"][0]["id"]
        firsts = [json.loads(line)["turns"][0]["user"] for line in Path(args.dialogues).read_text().splitlines() if line]
        pairs = []
        for text in firsts:
            chat = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})
            rec = chat.json().get("recommendation")
            if chat.status_code == 200 and rec and rec["items"]:
                pairs.append((text, rec))
            if len(pairs) >= args.turns:
                break
        # The history and k the agent ranked with: rebuilt by running the same (deterministic) turn here, with a
        # rank_fn that records its arguments and answers with the server's own response.
        from llm_recommender.agent import CatalogueIndex, chat_turn
        from llm_recommender.bundle import Bundle
        from llm_recommender.protocol import RankResponse

        catalogue = CatalogueIndex.from_bundle(Bundle.load(args.bundle))
        bodies = []
        for text, rec in pairs:
            asked: dict = {}

            def record(history, pool, k, rec=rec, asked=asked):  # type: ignore[no-untyped-def]
                asked.update(history=history, k=k)
                return RankResponse.model_validate(rec)

            chat_turn([{"role": "user", "content": text}], catalogue, record)
            history = [h.model_dump(mode="json", exclude_none=True) for h in asked["history"]]
            bodies.append((text, {"history": history, "candidates": [], "top_k": asked["k"], "reasons": True}))
        chat_s, rec_s = [], []
        for rep in range(args.repeats + 1):  # pass 0 is the warm-up
            for text, body in bodies:
                t0 = time.perf_counter()
                r1 = client.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})
                t1 = time.perf_counter()
                r2 = client.post("/v1/recommendations", json=body)
                t2 = time.perf_counter()
                assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
                if rep:
                    chat_s.append(t1 - t0)
                    rec_s.append(t2 - t1)
    finally:
        stop_servers(servers)
    out = {"command": "python eval/bench_chat.py " + " ".join(sys.argv[1:]), "commit": git_commit(),
           "turns": len(bodies), "repeats": args.repeats,
           "chat_p50_ms": 1e3 * statistics.median(chat_s), "chat_p95_ms": 1e3 * pct(chat_s, 0.95),
           "recommendations_p50_ms": 1e3 * statistics.median(rec_s), "recommendations_p95_ms": 1e3 * pct(rec_s, 0.95)}
    out["ratio_p50"] = out["chat_p50_ms"] / out["recommendations_p50_ms"]
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
