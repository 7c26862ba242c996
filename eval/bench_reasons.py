"""Reasons a person can check: grounding, distinctness and cost of reasons="evidence" and "llm" on a fitted bundle.

    python eval/bench_reasons.py --bundle BUNDLE --dataset ml-latest-small --users 50 --llm-users 10

For N test users (LLMRank candidates) and the top-k of each fused ranking it checks automatically:
every history title a reason names is in that item's evidence, every genre it names is one the item
has, reasons in one response are distinct, no reason is a bare title; and it times ranking with and
without reasons. ``reasons="llm"`` (the LLM phrases the evidence; its degenerate replies fall back to
the evidence text) runs on the first ``--llm-users`` users, and its fallback share is reported.
Writes results.json and results.md (with ten unedited example reasons per mode).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llm_recommender import Recommender
from llm_recommender.data import load_dataset
from llm_recommender.data.movielens import natural_title
from llm_recommender.data.splits import llmrank_cases
from llm_recommender.protocol import item_genres


def _forms(title: str) -> set[str]:
    base = re.sub(r"\s*\(\d{4}\)$", "", title)
    return {t.lower() for t in {title, base, natural_title(title), re.sub(r"\s*\(\d{4}\)$", "", natural_title(title))}
            if len(t) >= 4}


def check(item, reason: str, history_titles: set[str], genres: set[str], item_genres: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Independent of the pipeline's own filter: names only evidence titles, only the item's genres, not a bare title."""
    problems = []
    text = reason.lower()
    cited = set().union(*(_forms(e.title) for e in item.evidence.history_items)) if item.evidence.history_items else set()
    own = _forms(item.title)
    for title in history_titles:
        hits = {f for f in _forms(title) if re.search(rf"(?<!\w){re.escape(f)}(?!\w)", text)}
        if hits and not hits & cited and not hits & own:
            problems.append(f"names {title!r}, not in the evidence")
    scrubbed = text
    for title in history_titles | {item.title}:
        for f in sorted(_forms(title), key=len, reverse=True):
            scrubbed = scrubbed.replace(f, " ")
    for g in genres - item_genres:
        if re.search(rf"(?<!\w){re.escape(g.lower())}(?!\w)", scrubbed):
            problems.append(f"names genre {g!r}, which the item does not have")
    if reason.strip().rstrip(".").lower() in own | {f for t in history_titles for f in _forms(t)}:
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
    p.add_argument("--llm-users", type=int, default=10, help="users for reasons='llm' (about 5 s per reason on 2 CPUs)")
    a = p.parse_args()
    rec = Recommender.load(a.bundle)
    ds = load_dataset(a.dataset, a.data_dir)
    cases = llmrank_cases(ds, split="test", n_users=a.users, seed=0)
    genres = set().union(*(item_genres(it) for it in rec.bundle.space.items))
    modes = {}
    for mode, n_users in (("evidence", a.users), ("llm", a.llm_users)):
        if n_users <= 0:
            continue
        plain, timed, rows, problems, distinct, fallback_items = [], [], [], [], [], 0
        for c in tqdm(cases[:n_users], desc=f"reasons={mode}"):
            req = c.request.model_copy(update={"top_k": a.top_k})
            t0 = time.perf_counter()
            rec.rank_request(req)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            resp = rec.rank_request(req.model_copy(update={"reasons": mode}))
            timed.append(time.perf_counter() - t0)
            titles = {h.title for h in req.history}
            by_id = {x.id: x for x in req.candidates}
            reasons = [it.reason for it in resp.items]
            distinct.append(len(set(reasons)) / len(reasons))
            rejected = {part.split(": ")[0]: part.split(": ", 1)[1] for f in resp.fallbacks if f.stage == "reason"
                        for part in f.reason.split("; ") if ": " in part}
            fallback_items += len(rejected)
            for it in resp.items:
                bad = check(it, it.reason, titles, genres, set(item_genres(by_id[it.id])))
                problems += [(c.user_id, it.title, b) for b in bad]
                rows.append({"user": c.user_id, "item": it.title, "p": round(it.probability, 3), "reason": it.reason,
                             "llm_rejected": rejected.get(it.id)})
        n = len(rows)
        modes[mode] = {
            "users": len(plain), "reasons": n, "grounded_share": 1 - len({(u, t) for u, t, _ in problems}) / n,
            "problems": problems[:20],
            "distinct_share_mean": float(np.mean(distinct)), "distinct_share_min": float(np.min(distinct)),
            "ranking_p50_ms": float(np.median(plain) * 1e3), "with_reasons_p50_ms": float(np.median(timed) * 1e3),
            "reasons_overhead": float(np.median(timed) / np.median(plain) - 1),
            "fallback_share": fallback_items / n,
            "examples": rows[:10],
        }
    out = {"command": "python eval/bench_reasons.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
                                                                 if v is not None),
           "bundle": str(a.bundle), "components": list(rec.bundle.fusion.components), "modes": modes}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    md = [f"# Reasons: {a.dataset}, top-{a.top_k}, bundle fusion {', '.join(out['components'])}", "", f"`{out['command']}`", ""]
    for mode, r in modes.items():
        md += [f"## reasons=\"{mode}\" ({r['users']} users)", "",
               f"- grounded (names only evidence titles and the item's own genres, never a bare title): "
               f"{r['grounded_share']:.1%} of {r['reasons']}",
               f"- distinct within a response: mean {r['distinct_share_mean']:.1%}, worst {r['distinct_share_min']:.0%}",
               f"- ranking p50 {r['ranking_p50_ms']:.1f} ms, with reasons {r['with_reasons_p50_ms']:.1f} ms "
               f"({r['reasons_overhead']:+.0%})"]
        if mode == "llm":
            md.append(f"- LLM phrasing rejected by the filter, evidence text used instead: {r['fallback_share']:.0%}")
        md += ["", "Ten unedited examples:", "", "| user | item | P | reason |", "|---|---|---|---|",
               *(f"| {x['user']} | {x['item']} | {x['p']} | {x['reason']}"
                 f"{' *(LLM reply rejected: ' + x['llm_rejected'] + '; evidence text)*' if x['llm_rejected'] else ''} |"
                 for x in r["examples"]), ""]
    (a.out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
