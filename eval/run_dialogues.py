"""Run the agent's dialogue set and write eval/results/dialogues/results.json + results.md.

    PYTHONPATH=. python eval/run_dialogues.py [--dialogues eval/dialogues/dialogues.jsonl] [--out eval/results/dialogues]
    PYTHONPATH=. python eval/run_dialogues.py --bundle BUNDLE --out eval/results/dialogues-bundle

Catalogue: the bundled ml-latest-small sample (9,742 movies). Ranking: without ``--bundle``, the
genre-overlap content ranking (llm_recommender/agent/baseline.py), so the understanding layer is what is
measured; with ``--bundle`` (fitted on the sample), exactly what `llm-rec serve --bundle` runs for a chat
turn: the bundle's catalogue index, retrieval and fused ranking with evidence reasons.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from llm_recommender.agent import CatalogueIndex
from llm_recommender.agent.baseline import genre_rank
from llm_recommender.agent.scoring import load_dialogues, run_dialogues, typo_linking
from llm_recommender.data import load_dataset

ROOT = Path(__file__).resolve().parent.parent


def bundle_chat(bundle: str):  # type: ignore[no-untyped-def]
    """The server's chat ranking for a bundle: its catalogue index and ``rank_pool`` with reasons."""
    from llm_recommender import Recommender

    rec = Recommender.load(bundle)
    kept = ",".join(rec.bundle.fusion.components)
    return (lambda h, pool, k: rec.rank_pool(h, pool, k, reasons=True)), CatalogueIndex.from_bundle(rec.bundle), \
        f"bundle fused ({kept}) with evidence reasons"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", default=str(ROOT / "eval/dialogues/dialogues.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "eval/results/dialogues"))
    ap.add_argument("--typo-items", type=int, default=300, help="most-rated items for the held-out typo check")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", help="rank with this bundle (fitted on ml-latest-small), as the server does")
    args = ap.parse_args()
    ds = load_dataset("ml-latest-small")
    start = time.perf_counter()
    rank_fn, rank_name = genre_rank, "genre-overlap"
    if args.bundle:
        rank_fn, catalogue, rank_name = bundle_chat(args.bundle)
    else:
        catalogue = CatalogueIndex([ds.item(i) for i in ds.item_ids])
    build_s = time.perf_counter() - start
    result = run_dialogues(load_dialogues(args.dialogues), catalogue, rank_fn)
    # Held-out: the most-rated sample titles, typo'd at random (not tuned on, unlike the dialogue set).
    counts = Counter(i.item_id for seq in ds.sequences.values() for i in seq)
    popular = [i for i, _ in counts.most_common(args.typo_items) if i in catalogue]
    typos = typo_linking(catalogue, popular, seed=args.seed)
    with_pop = CatalogueIndex(catalogue.items, popularity=counts)
    typos_pop = typo_linking(with_pop, popular, seed=args.seed)
    typos_pop.pop("examples")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                            check=False).stdout.strip()
    result = {"command": "python eval/run_dialogues.py " + " ".join(sys.argv[1:]), "commit": commit,
              "parser": "deterministic", "rank_fn": rank_name, "catalogue": f"ml-latest-small ({len(catalogue)} items)",
              "catalogue_build_s": round(build_s, 3), **result, "typo_linking_heldout": typos,
              "typo_linking_heldout_with_popularity": typos_pop}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [f"# Agent dialogue set: {result['dialogues']} dialogues, {result['turns']} turns", "",
             (f"`{result['command']}` at commit `{commit}`; parser {result['parser']}, ranking {result['rank_fn']}, "
              f"catalogue {result['catalogue']}; {result['counts']['popularity_variants']} dialogue(s) ran their "
             "popularity-resolved turns (the catalogue knows interaction counts)."), "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["metrics"].items()]
    lines += [f"| latency per turn (mean / p95, s) | {result['latency_s']['mean']} / {result['latency_s']['p95']} |", ""]
    lines += [f"## Held-out typo check: {typos['items']} most-rated titles, one random edit, no year (seed {typos['seed']})",
              "", f"linked {typos['linked']} ({typos['accuracy']:.1%}); asked back with the right title among the options "
              f"{typos['asked_back_with_it_among_options']}; linked to another title {typos['linked_to_another']}; "
              f"not found {typos['not_found']}.", "",
              f"With interaction counts as popularity (a far more popular close match is taken without asking): "
              f"linked {typos_pop['linked']} ({typos_pop['accuracy']:.1%}), asked back "
              f"{typos_pop['asked_back_with_it_among_options']}, linked to another {typos_pop['linked_to_another']}, "
              f"not found {typos_pop['not_found']}.", ""]
    lines += [f"- {e['typed']!r} (for {e['item']!r}) -> {e['got']}" for e in typos["examples"]] + [""]
    if result["failures"]:
        lines += ["## Failures", ""] + [f"- `{f['turn']}` {f['user']!r}: {'; '.join(f['problems'])}" for f in result["failures"]]
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
