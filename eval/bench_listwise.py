#!/usr/bin/env python
"""Listwise decoding on the default model: latency, tokens, invalid / fallback / echo shares.

Workload as in eval/bench_latency.py: the embedded SmolLM2-135M-Instruct (transformers
backend), users of the bundled ml-latest-small sample, 50-item history, 20 candidates.
One process, one model; per request and configuration:

* ``verbalizer``: the one-pass baseline (listwise runs it too: it gives the probabilities);
* ``listwise`` constrained with ids (chosen whole, and token by token: ``token choice``), with
  labels (A..T), and top-5 with labels;
* ``listwise`` validated (schema, re-ask, fallback), only with ``--validated``: it is slow.

``echo`` = the ranking is the presentation order (c0, c1, ...), over its ranked part.
``top-1 = max P`` = the top-ranked candidate is the one the result's probabilities favour.

    python eval/bench_listwise.py --users 12 --threads 1 --out eval/results/bench_listwise.json

Validity at scale (ML-100K users, one configuration, any backend; ``--chunk`` requests per
``score_many`` call, so the vLLM engine batches them):

    python eval/bench_listwise.py --data-dir ../shared/data/ml-100k --users 200 --configs "listwise labels" \
        --backend vllm --chunk 16 --threads 2 --out eval/results/listwise_validity_vllm.json

A benchmark, not a test: nothing here asserts speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

CONFIGS = {
    "verbalizer": None,
    "listwise ids": {"listwise_keys": "ids"},
    "listwise ids, token choice": {"listwise_keys": "ids", "backend": {"listwise_key_choice": "token"}},
    "listwise labels": {"listwise_keys": "labels"},
    "listwise labels top-5": {"listwise_keys": "labels", "listwise_top_k": 5},
    "listwise ids validated": {"listwise_keys": "ids", "listwise_decoding": "validated"},
}


def requests(n: int, candidates: int, history: int) -> list[dict]:
    from llm_recommender.sample_data import ratings_by_user, sample_request

    out = []
    for user in map(str, range(1, 611)):
        if len(ratings_by_user().get(user, [])) > history + 1:
            out.append(sample_request(user, candidates, history, seed=0, top_k=candidates, reasons=False)[0])
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=12)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--history", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validated", action="store_true", help="also run the validated path (about a minute per request)")
    ap.add_argument("--configs", help=f"comma-separated subset of: {', '.join(CONFIGS)} (default: all but validated)")
    ap.add_argument("--data-dir", type=Path, help="ML-100K folder: its users instead of the bundled sample's")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--chunk", type=int, default=1, help="requests per score_many call (seconds are per request)")
    ap.add_argument("--out", type=Path, default=Path("eval/results/bench_listwise.json"))
    args = ap.parse_args()

    from llm_recommender import Recommender
    from llm_recommender.protocol import parse_request

    opts = {"vllm_cpu_threads_bind": "0" if args.threads == 1 else f"0-{args.threads - 1}"} if args.backend == "vllm" else {}
    rec = Recommender(backend=args.backend, threads=args.threads, **opts)
    if args.data_dir:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_backends import build_requests

        raw_reqs = build_requests(args.data_dir, args.users + 1, args.candidates, args.history, seed=0)
        for r in raw_reqs:
            r.pop("_target")
    else:
        raw_reqs = requests(args.users + 1, args.candidates, args.history)
    reqs = [parse_request(r) for r in raw_reqs]
    names = args.configs.split(",") if args.configs else [n for n in CONFIGS if args.validated or "validated" not in n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown --configs {unknown}; choose from {list(CONFIGS)}")
    scorers = {n: rec.scorer("verbalizer") if CONFIGS[n] is None else listwise_scorer(rec, CONFIGS[n]) for n in names}
    for scorer in scorers.values():
        scorer.score(reqs[0])  # warm-up, not timed
    raw: dict[str, list[dict]] = {n: [] for n in names}
    timed = reqs[1:]
    for i in range(0, len(timed), args.chunk):
        chunk = timed[i : i + args.chunk]
        for name, scorer in scorers.items():
            record(raw[name], scorer, chunk, scorer.backend)
        print(f"users {len(raw[names[0]])}/{len(timed)}: " + ", ".join(f"{n} {raw[n][-1]['seconds']:.2f}s" for n in names),
              file=sys.stderr, flush=True)
        rows = summarise(raw, names)  # written after every chunk: a run cut short keeps what it measured
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": rec.model_name,
                  "backend": args.backend, "dtype": rec.backend.dtype_name, "threads": args.threads,
                  "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows, "raw": raw}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    print("| config | decoding | p50 s | x verbalizer | completion tokens | invalid | fallback | echo | top-1 = verbalizer's "
          "| top-1 = max P |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pct = (lambda v: "-" if v is None else f"{v:.0%}")
        ratio = "-" if r["p50_vs_verbalizer"] is None else f"{r['p50_vs_verbalizer']:.2f}"
        print(f"| {r['config']} | {r['decoding'] or '-'} | {r['p50_s']:.2f} | {ratio} | "
              f"{r['completion_tokens_mean']:.0f} | {pct(r['invalid_output_share'])} | {pct(r['fallback_share'])} | "
              f"{pct(r['echo_share'])} | {pct(r['top1_agrees_with_verbalizer'])} | {pct(r['top1_most_probable'])} |")
    print(f"written to {args.out}")


def listwise_scorer(rec, settings: dict):
    """A listwise scorer with ``settings``; a ``backend`` entry: the same model under other backend options."""
    from llm_recommender.scorers.llm.listwise import ListwiseScorer

    settings = dict(settings)
    backend = rec.backend
    if "backend" in settings:
        options = settings.pop("backend")
        if rec.backend.name != "transformers":
            raise SystemExit(f"backend options {options} need --backend transformers")
        backend = type(rec.backend)(rec.backend.config.model_copy(update=options), model=rec.backend.model,
                                    tokenizer=rec.backend.tokenizer)
    return ListwiseScorer(backend, rec.renderer, rec.config_for("listwise", **settings))


def record(out: list[dict], scorer, chunk: list, backend) -> None:
    """Score ``chunk`` in one call; append a row per request (seconds and tokens: the call's, per request)."""
    before = backend.stats.completion_tokens
    t = time.perf_counter()
    results = scorer.score_many(chunk)
    seconds = (time.perf_counter() - t) / len(results)
    tokens = (backend.stats.completion_tokens - before) / len(results)
    for req, result in zip(chunk, results):
        k = result.details.get("ranked", len(req.candidates))
        attempts = result.details.get("attempts", [])
        out.append({
            "seconds": seconds,
            "completion_tokens": tokens,
            "invalid_outputs": sum(not a["ok"] for a in attempts),
            "outputs": len(attempts),
            "fallback": bool(result.details.get("fallback")),
            "echo": result.order is not None and result.order[:k] == list(range(k)),
            "decoding": result.details.get("decoding"),
            "probabilities": result.details.get("probabilities"),
            "top1": result.ranking()[0],
            "top1_most_probable": bool(result.ranking()[0] == int(result.probabilities.argmax())),
            "key_choice": result.details.get("key_choice"),
        })


def summarise(raw: dict[str, list[dict]], names: list[str]) -> list[dict]:
    verb_p50 = statistics.median(r["seconds"] for r in raw["verbalizer"]) if "verbalizer" in raw else None
    rows = []
    for name in names:
        rs = raw[name]
        outputs = sum(r["outputs"] for r in rs)
        p50 = statistics.median(r["seconds"] for r in rs)
        rows.append({
            "config": name, "requests": len(rs), "decoding": rs[0]["decoding"], "p50_s": p50,
            "p50_vs_verbalizer": p50 / verb_p50 if verb_p50 else None,
            "completion_tokens_mean": statistics.fmean(r["completion_tokens"] for r in rs),
            "invalid_output_share": (sum(r["invalid_outputs"] for r in rs) / outputs) if outputs else None,
            "fallback_share": statistics.fmean(r["fallback"] for r in rs) if outputs else None,
            "echo_share": statistics.fmean(r["echo"] for r in rs) if outputs else None,
            "top1_most_probable": statistics.fmean(r["top1_most_probable"] for r in rs),
            "key_choice": rs[0].get("key_choice"),
            "top1_agrees_with_verbalizer": statistics.fmean(a["top1"] == b["top1"] for a, b in zip(rs, raw["verbalizer"]))
            if "verbalizer" in raw else None,
        })
    return rows


if __name__ == "__main__":
    main()
