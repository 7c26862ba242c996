"""Can the llm_ranker recipe learn at all? A plumbing check on a tiny random Llama, not a quality figure.

A synthetic catalogue where every user's next item is the successor of the last one (k -> k+1 mod n):
the sequence model behind the soft tokens learns that at once, so a candidate slot's CF score names
the target. If the ranker's validation NDCG@10 rises from chance towards 1 with `cf_scores`, the
slots, labels, loss and scoring are wired right and what the real model lacks is steps, not plumbing.

    python eval/probe_llm_ranker_learns.py --steps 300 --out eval/results/llm-ranker-soft/probe_tiny.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_successor_dataset(folder: Path, n_users: int = 60, n_items: int = 50, per_user: int = 20, seed: int = 0):
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "genres"])
        for i in range(n_items):
            w.writerow([i, f"Item {i}", "Drama"])
    with open(folder / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "rating"])
        for u in range(n_users):
            start, t = rng.randrange(n_items), 1_000_000
            for k in range(per_user):
                t += 10
                w.writerow([f"u{u}", (start + k) % n_items, t, 4])
    return folder


def tiny_model(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llm_recommender.model_store import ensure_converted

    tok = AutoTokenizer.from_pretrained(str(ensure_converted()))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--variants", default="cf_scores+slot_labels,cf_scores,item_tokens_only",
                    help="comma-separated: cf_scores+slot_labels | cf_scores | item_tokens_only | "
                    "cf_scores+readout_slot | readout_slot")
    ap.add_argument("--model", choices=["tiny", "default"], default="tiny",
                    help="tiny: a random 2-layer Llama (the plumbing check); default: the embedded SmolLM2-135M")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tokens-lr", type=float, default=1e-2)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from llm_recommender.data import load_dataset
    from llm_recommender.data.splits import leave_one_out, llmrank_cases
    from llm_recommender.scorers import scorer_class
    from llm_recommender.scorers.component import TrainingData
    from llm_recommender.scorers.item_space import ItemSpace

    tmp = Path(tempfile.mkdtemp(prefix="ranker-probe-"))
    data_dir = write_successor_dataset(tmp / "data")
    if args.model == "tiny":
        model = tiny_model(tmp / "model")
    else:
        from llm_recommender.model_store import ensure_converted

        model = ensure_converted()
    ds = load_dataset("generic", data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    seqs = [np.array([space.index[x.item_id] for x in s.before("valid")], dtype=np.int64) for s in splits.values()]
    valid = llmrank_cases(ds, split="valid", n_users=40, n_candidates=20, seed=0, history_len=10, splits=splits)
    results = {}
    for variant in args.variants.split(","):
        flags = {"cf_scores+slot_labels": {"cf_scores": True, "slot_labels": True},
                 "cf_scores+readout_slot": {"cf_scores": True, "readout": "slot"},
                 "readout_slot": {"readout": "slot"},
                 "cf_scores": {"cf_scores": True}, "item_tokens_only": {}}[variant]
        cfg = {"model": str(model), "method": "full", "steps": args.steps, "batch_size": 8, "eval_every": args.eval_every,
               "eval_users": 40, "patience": 100, "lr": args.lr, "tokens_lr": args.tokens_lr, "tail": 5, "history": 5,
               "hard_negatives": 0, "dtype": "float32", "threads": 1, "titles": False, "hints": False,
               "item_tokens": "sequence", "item_tokens_config": {"text": "none", "model": {"epochs": 80, "lr": 0.005, "dropout": 0.0}},
               "work_dir": str(tmp / f"work-{variant}"), "progress": False, "max_minutes": None, **flags}
        data = TrainingData(space=space, sequences=seqs, seed=0, validation=valid)
        t0 = time.perf_counter()
        comp = scorer_class("llm_ranker")(space, cfg).fit(data)  # type: ignore[call-arg]
        curve = comp.curve
        results[variant] = {"points": [(p["step"], p["ndcg@10"]) for p in curve["points"]],
                            "best": curve["best_ndcg@10"], "chance": curve["chance_ndcg@10"],
                            "seconds": round(time.perf_counter() - t0, 1)}
        print(variant, results[variant], file=sys.stderr, flush=True)
    report = {"command": " ".join(["python", *sys.argv]), "cpu": platform.processor() or platform.machine(),
              "dataset": "successor walk: 60 users x 20 items over 50 items, next = last + 1 (mod 50)",
              "model": "tiny random Llama (2 layers, hidden 64)" if args.model == "tiny" else str(model), "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
