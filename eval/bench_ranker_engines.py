"""The trained ``llm_ranker`` served as trained: the same bundle component scored by the transformers backend,
by the vLLM CPU engine (soft item tokens through its prompt-embeddings input) and, with ``--server``, through
vLLM's HTTP server on the tuned weights as ``llm-rec serve-model --bundle`` starts it (the item tokens as
``prompt_embeds``, the openai backend), on the same test requests.

Reports the share of requests whose top-1 agrees with the transformers backend (issue 28's goal: >= 95% of
50), the largest score gap, and the seconds per 20-candidate request (p50, p95) of each engine, one request
at a time as a user sends them.

    python eval/bench_ranker_engines.py --bundle OUT/bundle --dataset ml-100k --data-dir DIR --requests 50 \\
        --out eval/results/llm-ranker-readout/engines.json

The vLLM engine runs in its own process (``in_process: false``, the faster one on these CPUs) unless
``--in-process``. Timings include nothing but ``score_many`` of one request; record the CPU beside them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import cpu_name, print_and_write  # eval/_results.py (the script's folder is on the path)


def _time(comp: Any, requests: list[Any]) -> tuple[list[np.ndarray], list[float]]:
    scores, seconds = [], []
    for request in requests:
        t0 = time.perf_counter()
        scores.append(np.asarray(comp.score_many([request])[0].scores, dtype=float))
        seconds.append(time.perf_counter() - t0)
    return scores, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="a fitted bundle folder with an llm_ranker component")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--in-process", action="store_true", help="the vLLM engine in this process (slower here)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the transformers backend")
    ap.add_argument("--dtype", default="auto", help="both engines' dtype (auto: bf16 where the CPU has bf16 "
                    "instructions or AMX, as served; float32 for a parity check without bf16 rounding)")
    ap.add_argument("--server", action="store_true", help="also score through vLLM's HTTP server (serve-model --bundle)")
    ap.add_argument("--no-engine", action="store_true", help="skip the vLLM engine (with --server: only the server)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from llm_recommender.bundle.bundle import Bundle
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases

    bundle = Bundle.load(args.bundle)
    if "llm_ranker" not in bundle.components:
        sys.exit(f"{args.bundle} has no llm_ranker component")
    ds = load_dataset(args.dataset, args.data_dir)
    cases = llmrank_cases(ds, split=args.split, n_users=args.requests, seed=args.seed, splits=leave_one_out(ds))
    requests = [c.request for c in cases]
    folder = Path(args.bundle) / "components" / "llm_ranker"
    on_hf = bundle.components["llm_ranker"]
    on_hf.config = on_hf.config.model_copy(update={"threads": args.threads, "dtype": args.dtype})
    print(f"{len(requests)} {args.split} requests of {len(requests[0].candidates)} candidates; transformers ...",
          flush=True)
    on_hf.score_many(requests[:1])  # loads the model; warm-up (not timed)
    hf_scores, hf_s = _time(on_hf, requests)
    timed: dict[str, tuple[list[np.ndarray], list[float]]] = {"transformers": (hf_scores, hf_s)}
    dtypes = {"transformers": on_hf._ranker().prompter.backend.dtype_name}
    if not args.no_engine:
        served = type(on_hf)(bundle.space, {**on_hf.config.model_dump(), "backend": "vllm",  # type: ignore[call-arg]
                                            "dtype": args.dtype,
                                            "vllm": {"in_process": bool(args.in_process)}})
        served.load_state(folder)
        print("vLLM engine ...", flush=True)
        ranker = served._ranker()  # starts the engine (not timed)
        try:
            dtypes["vllm"] = ranker.prompter.backend.dtype_name
            served.score_many(requests[:1])  # warm-up (not timed)
            timed["vllm"] = _time(served, requests)
        finally:
            ranker.prompter.backend.close()
    if args.server:
        timed["vllm_server"], dtypes["vllm_server"] = _through_server(on_hf, bundle, folder, requests, args.dtype)
    agreement, gaps = {}, {}
    for name, (scores, _) in timed.items():
        if name != "transformers":
            agreement[name] = round(float(np.mean([int(np.argmax(a)) == int(np.argmax(b))
                                                   for a, b in zip(hf_scores, scores)])), 4)
            gaps[name] = round(max(float(np.max(np.abs(a - b))) for a, b in zip(hf_scores, scores)), 5)
    first = next(iter(agreement), None)
    out = {
        "bundle": str(args.bundle), "dataset": args.dataset, "split": args.split, "requests": len(requests),
        "candidates": len(requests[0].candidates), "seed": args.seed,
        # against the transformers backend; the first two keys keep the shape of the earlier results
        "top1_agreement": agreement.get(first) if first else None, "max_abs_score_gap": gaps.get(first) if first else None,
        "top1_agreement_with_transformers": agreement, "max_abs_score_gap_to_transformers": gaps,
        "seconds_per_request": {
            name: {"p50": round(float(np.percentile(s, 50)), 3), "p95": round(float(np.percentile(s, 95)), 3),
                   "mean": round(float(np.mean(s)), 3)}
            for name, (_, s) in timed.items()
        },
        "vllm_in_process": bool(args.in_process), "dtype": dtypes, "cpu": cpu_name(),
        "command": " ".join(["python", *sys.argv]),
    }
    print_and_write(out, args.out)


def _through_server(on_hf: Any, bundle: Any, folder: Path, requests: list[Any],
                    dtype: str) -> tuple[tuple[list[np.ndarray], list[float]], str]:
    """vLLM's HTTP server on the ranker's weights with prompt embeddings on (what ``serve-model --bundle``
    starts), and the component scoring through it over HTTP (``backend: openai``)."""
    from llm_recommender.backends.configs import VLLMConfig
    from llm_recommender.backends.vllm_server import VLLMServer
    from llm_recommender.model_store import DEFAULT_MODEL
    from llm_recommender.ranker.training import servable_folder

    weights = servable_folder(on_hf.model_dir, on_hf.config.model or DEFAULT_MODEL)
    server = VLLMServer(VLLMConfig(model=str(weights), dtype=dtype), served_model_name="llm_ranker",  # pyright: ignore[reportArgumentType]
                        extra_args=["--enable-prompt-embeds"])
    print(f"vLLM HTTP server on {weights} ...", flush=True)
    server.start(timeout=600)
    try:
        over_http = type(on_hf)(bundle.space, {**on_hf.config.model_dump(), "backend": "openai",
                                               "server": {"base_url": server.url}})
        over_http.load_state(folder)
        over_http.score_many(requests[:1])  # warm-up (not timed)
        return _time(over_http, requests), f"{dtype} (server)"
    finally:
        server.stop()


if __name__ == "__main__":
    main()
