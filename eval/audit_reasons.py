"""The reason audit: what reasons say that is not true, counted over real users and chat turns.

    python eval/audit_reasons.py --ml100k BUNDLE --ml100k-data DIR --beauty BUNDLE --beauty-data DIR \
        --users 50 --out eval/results/reasons_audit.json

For each dataset, N test users (seeded) are ranked twice with ``reasons=True``: over LLMRank candidates (the
held-out item + 19 sampled, top 10: low-probability items included) and over the catalogue (candidates
omitted, top 10). The ML-100K bundle also answers ``--chat`` turns through the chat agent (likes stated in
sentences). Each response goes through :func:`llm_recommender.explain.audit.audit_response`: invented
ratings, false recency claims, citations of a component the fusion dropped, movie words on a non-movie
catalogue, confident reasons on low-probability items, distinct reasons per response. Prints a table and
writes the JSON (with the goals and the command). Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from llm_recommender import Recommender
from llm_recommender.data import load_dataset
from llm_recommender.data.splits import llmrank_cases
from llm_recommender.explain.audit import DISTINCT_GOAL, GOALS, AuditCounts, audit_response, failures
from llm_recommender.explain.explainer import bundle_words

# 20 chat turns over ML-100K titles: likes stated in sentences (no ratings), one to three titles each.
CHAT_TURNS = [
    "I loved Alien", "I liked Toy Story and Babe", "recommend something like The Godfather",
    "I enjoyed Star Wars and The Empire Strikes Back", "I loved Fargo, what next?", "I liked Heat and Casino",
    "something like Pulp Fiction please", "I loved Schindler's List", "I really liked Aladdin and The Lion King",
    "I enjoyed Twelve Monkeys", "I liked Braveheart", "more like Jurassic Park", "I loved The Silence of the Lambs",
    "I liked Sleepless in Seattle and While You Were Sleeping", "I enjoyed Men in Black", "I loved Titanic",
    "I liked Scream and Halloween", "I enjoyed Apollo 13", "I loved Casablanca and Vertigo", "I liked Willy Wonka",
]


def manifest_sets(rec: Recommender) -> tuple[list[str], list[str]]:
    comps = rec.bundle.manifest.components
    return [c.name for c in comps if c.kept], [c.name for c in comps if not c.kept]


def audit_dataset(bundle: Path, dataset: str, data_dir: Path, users: int, seed: int, top_k: int) -> dict[str, Any]:
    rec = Recommender.load(bundle)
    kept, dropped = manifest_sets(rec)
    words = bundle_words(rec.bundle)
    ds = load_dataset(dataset, data_dir)
    cases = llmrank_cases(ds, split="test", n_users=users, n_candidates=20, seed=seed)
    counts = AuditCounts()
    examples: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for mode in ("candidates", "catalogue"):
        for c in cases:
            req = c.request.model_copy(update={"top_k": top_k, "reasons": True,
                                               **({"candidates": []} if mode == "catalogue" else {})})
            resp = rec.rank_request(req)
            audit_response(counts, req, resp,
                           kept=kept, dropped=dropped, noun=words.noun)
            if len(examples) < 3 and mode == "catalogue":
                examples.append({"user": c.user_id, "history_tail": [h.title for h in req.history[-3:]],
                                 "top": [{"title": it.title, "p": round(it.probability, 4), "reason": it.reason}
                                         for it in resp.items[:3]]})
    return {"bundle": str(bundle), "dataset": dataset, "users": len(cases), "kept": kept, "dropped": dropped,
            "words": words.model_dump(), "seconds": round(time.perf_counter() - t0, 1), **counts.summary(),
            "sample": examples}


def audit_chat(bundle: Path, turns: list[str]) -> dict[str, Any]:
    from llm_recommender.agent import CatalogueIndex, chat_turn

    rec = Recommender.load(bundle)
    kept, dropped = manifest_sets(rec)
    catalogue = CatalogueIndex.from_bundle(rec.bundle)
    counts = AuditCounts()
    seen: list[tuple[Any, Any]] = []
    examples: list[dict[str, Any]] = []

    def rank_fn(history: Any, pool: Any, k: int) -> Any:
        resp = rec.rank_pool(history, pool, k, reasons=True)
        seen.append((history, resp))
        return resp

    kinds: dict[str, int] = {}
    for text in turns:
        _, answer = chat_turn([{"role": "user", "content": text}], catalogue, rank_fn)
        kinds[answer.kind] = kinds.get(answer.kind, 0) + 1
        if answer.recommendation is not None and seen:
            history, raw = seen[-1]
            from llm_recommender.protocol import RankRequest

            req = RankRequest(history=history, candidates=[], top_k=1)
            audit_response(counts, req, answer.recommendation, kept=kept, dropped=dropped,
                           noun=bundle_words(rec.bundle).noun)
            if len(examples) < 3:
                examples.append({"user": text, "liked": [h.title for h in history],
                                 "top": [{"title": it.title, "p": round(it.probability, 4), "reason": it.reason}
                                         for it in answer.recommendation.items[:2]]})
    return {"bundle": str(bundle), "turns": len(turns), "answers": kinds, **counts.summary(), "sample": examples}


def table(rows: dict[str, dict[str, Any]]) -> str:
    cols = ["responses", "reasons", "invented_ratings", "false_recency", "dropped_citations", "movie_words",
            "confident_low_p", "low_p_items", "empty_reasons", "distinct_mean", "distinct_worst"]
    out = ["| run | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(str(r.get(c)) for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--ml100k", type=Path, help="an ML-100K bundle (llm-rec fit --dataset ml-100k)")
    ap.add_argument("--ml100k-data", type=Path, default=Path("/work/shared/data/ml-100k"))
    ap.add_argument("--beauty", type=Path, help="an Amazon Beauty bundle (llm-rec fit --dataset amazon-beauty)")
    ap.add_argument("--beauty-data", type=Path, default=Path("/work/shared/data/amazon-beauty-2014-5core"))
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--chat", type=int, default=20, help="chat turns through the agent (ML-100K bundle)")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("eval/results/reasons_audit.json"))
    args = ap.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    if args.ml100k:
        rows["ml-100k"] = audit_dataset(args.ml100k, "ml-100k", args.ml100k_data, args.users, args.seed, args.top_k)
        if args.chat:
            rows["chat (ml-100k)"] = audit_chat(args.ml100k, CHAT_TURNS[: args.chat])
    if args.beauty:
        rows["amazon-beauty"] = audit_dataset(args.beauty, "amazon-beauty", args.beauty_data, args.users, args.seed, args.top_k)
    missed = {name: failures(r) for name, r in rows.items()}
    record = {"command": "python " + " ".join(sys.argv), "goals": {**GOALS, "distinct_mean_min": DISTINCT_GOAL},
              "runs": rows, "missed": missed}
    from llm_recommender.provenance import git_commit

    record["git_commit"] = git_commit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(table(rows))
    for name, m in missed.items():
        print(f"{name}: " + ("all goals met" if not m else "MISSED " + "; ".join(m)))
    return 1 if any(missed.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
