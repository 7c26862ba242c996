"""Reasons a person can check: grounding, distinctness and cost of reasons="evidence" on a fitted bundle.

    python eval/bench_reasons.py --bundle BUNDLE --dataset ml-100k --data-dir ../shared/data/ml-100k

For N test users (LLMRank candidates) and the top-k of each fused ranking it checks automatically:
every history item a reason cites is in that item's evidence, every attribute it names is one the
item has, reasons in one response are distinct, no reason is a bare title; and it times ranking
with and without reasons. Writes results.json and results.md (with unedited example reasons).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from llm_recommender import Recommender
from llm_recommender.data import load_dataset
from llm_recommender.evaluation.protocols import llmrank_cases


def check(item, reason: str, history_titles: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    problems = []
    ev = item.evidence
    cited = {e.title for e in ev.history_items}
    for title in history_titles:
        if title in reason and title not in cited:
            problems.append(f"cites {title!r}, not in the evidence")
    attrs = {str(v).lower() for e in ev.history_items for v in e.shared}
    m = re.search(r"; also (.*)\.$", reason)
    for g in (m.group(1).split(", ") if m else []):
        if g not in attrs:
            problems.append(f"names {g!r}, not an attribute it shares")
    if reason.strip().rstrip(".") == item.title:
        problems.append("bare title")
    return problems


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("eval/results/reasons"))
    a = p.parse_args()
    rec = Recommender.load(a.bundle)
    ds = load_dataset(a.dataset, a.data_dir)
    cases = llmrank_cases(ds, split="test", n_users=a.users, seed=0)
    plain, timed, rows, problems, distinct = [], [], [], [], []
    for c in cases:
        req = c.request.model_copy(update={"top_k": a.top_k})
        t0 = time.perf_counter()
        rec.rank_request(req)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        resp = rec.rank_request(req.model_copy(update={"reasons": "evidence"}))
        timed.append(time.perf_counter() - t0)
        titles = {h.title for h in req.history}
        reasons = [it.reason for it in resp.items]
        distinct.append(len(set(reasons)) / len(reasons))
        for it in resp.items:
            bad = check(it, it.reason, titles)
            problems += [(c.user_id, it.title, b) for b in bad]
            rows.append({"user": c.user_id, "item": it.title, "p": round(it.probability, 3), "reason": it.reason})
    n = len(rows)
    out = {
        "command": "python eval/bench_reasons.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()),
        "bundle": str(a.bundle), "users": len(cases), "reasons": n,
        "grounded_share": 1 - len({(u, t) for u, t, _ in problems}) / n,
        "problems": problems[:20],
        "distinct_share_mean": float(np.mean(distinct)), "distinct_share_min": float(np.min(distinct)),
        "ranking_p50_ms": float(np.median(plain) * 1e3), "with_reasons_p50_ms": float(np.median(timed) * 1e3),
        "reasons_overhead": float(np.median(timed) / np.median(plain) - 1),
        "examples": rows[:10],
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [f"# Evidence reasons: {a.dataset}, {len(cases)} users, top-{a.top_k}", "", f"`{out['command']}`", "",
          f"- grounded (cites only evidence items, names only shared attributes, never a bare title): "
          f"{out['grounded_share']:.1%} of {n}",
          f"- distinct within a response: mean {out['distinct_share_mean']:.1%}, worst {out['distinct_share_min']:.0%}",
          f"- ranking p50 {out['ranking_p50_ms']:.1f} ms, with reasons {out['with_reasons_p50_ms']:.1f} ms "
          f"(+{out['reasons_overhead']:.0%})", "", "Ten unedited examples:", "", "| user | item | P | reason |",
          "|---|---|---|---|", *(f"| {r['user']} | {r['item']} | {r['p']} | {r['reason']} |" for r in rows[:10])]
    (a.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
