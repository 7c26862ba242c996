"""What does the LLM add? The same bundle with no text, MiniLM vectors or the LLM's vectors, warm and cold.

    python eval/ablation_text.py --dataset ml-100k --data-dir ../shared/data/ml-100k --threads 1

For each protocol (``warm`` = LLMRank, ``cold`` = cold-start: targets and candidates are items kept out of
training) and each text source, one ``llm-rec eval`` run (200 users, seed 0) fits a bundle of popularity,
co-occurrence, item-kNN, ALS and the sequence model, plus the text component of that source (``embedding``
for MiniLM, ``representation`` for the LLM), with the sequence model reading the same source (``none``: item
IDs only). Each run's report lands in ``OUT/<protocol>-<text>/``; a run whose ``results.json`` exists is
skipped, so an interrupted ablation resumes. The table (``OUT/ablation.md`` and ``.json``) gives test NDCG@10
of the sequence model alone, the text component alone and the fused bundle, the fused ECE, and what the
fusion kept. The trained LLM ranker's rows come from its own runs (docs/llm-ranker.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE = ["popularity", "cooccurrence", "itemknn", "als"]
TEXT_COMPONENT = {"none": None, "minilm": "embedding", "llm": "representation"}
PROTOCOL = {"warm": "llmrank", "cold": "cold-start"}
SEQUENCE_MODEL = {  # the committed reports' settings: the default warm, more ID dropout cold (the text path learns)
    "warm": {"epochs": 30, "patience": 3, "id_dropout": 0.1},
    "cold": {"epochs": 15, "patience": 3, "id_dropout": 0.3},
}


def command(args: argparse.Namespace, protocol: str, text: str, out: Path) -> list[str]:
    comps = [*BASE, *filter(None, [TEXT_COMPONENT[text]]), "sequence"]
    fit_config = {"sequence": {"text": text, "model": SEQUENCE_MODEL[protocol]}}
    return [sys.executable, "-m", "llm_recommender.cli", "eval", "--dataset", args.dataset, "--data-dir",
            str(args.data_dir), "--protocol", PROTOCOL[protocol], "--users", str(args.users), "--seed", str(args.seed),
            "--scorers", ",".join(["random", "fused", *comps]), "--fit-components", ",".join(comps),
            "--fit-config", json.dumps(fit_config), "--calibration-protocol", "llmrank",
            "--threads", str(args.threads), "--out", str(out), "--no-progress"]


def row(protocol: str, text: str, results: dict[str, Any]) -> dict[str, Any]:
    scorers = results["sets"]["llmrank"]["scorers"]
    ndcg = {name: round(s["ranking"]["ndcg@10"], 4) for name, s in scorers.items()}
    comp = TEXT_COMPONENT[text]
    return {"protocol": protocol, "text": text, "sequence": ndcg["sequence"], "text_component": comp,
            "text_component_ndcg@10": ndcg.get(comp) if comp else None, "fused": ndcg["fused"],
            "fused_ece": round(scorers["fused"]["calibration"]["uncalibrated"]["ece"], 4),
            "kept": results["bundle"]["fusion"]["components"], "random": ndcg["random"], "als": ndcg["als"]}


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| protocol | text | sequence alone | text component alone | fused | fused ECE | the fusion kept |\n"
            "|---|---|---|---|---|---|---|\n")
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    return head + "".join(
        f"| {r['protocol']} | {r['text']} | {fmt(r['sequence'])} | "
        f"{(r['text_component'] + ' ' + fmt(r['text_component_ndcg@10'])) if r['text_component'] else '-'} | "
        f"{fmt(r['fused'])} | {fmt(r['fused_ece'])} | {', '.join(r['kept'])} |\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--protocols", default="warm,cold", help="comma-separated: warm, cold")
    ap.add_argument("--texts", default="none,minilm,llm", help="comma-separated: none, minilm, llm")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="default eval/results/ablation-<dataset>")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "eval" / "results" / f"ablation-{args.dataset}"
    protocols = [p for p in args.protocols.split(",") if p]
    texts = [t for t in args.texts.split(",") if t]
    for bad in [p for p in protocols if p not in PROTOCOL] + [t for t in texts if t not in TEXT_COMPONENT]:
        ap.error(f"unknown protocol or text source {bad!r}")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for protocol in protocols:
        for text in texts:
            run_dir = out / f"{protocol}-{text}"
            if not (run_dir / "results.json").is_file():
                cmd = command(args, protocol, text, run_dir)
                print("running:", " ".join(cmd[1:]), flush=True)
                subprocess.run(cmd, check=True, env=env)
            rows.append(row(protocol, text, json.loads((run_dir / "results.json").read_text())))
            print(json.dumps(rows[-1]), flush=True)
    cmd_line = "python eval/ablation_text.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "ablation.json").write_text(json.dumps({"command": cmd_line, "rows": rows}, indent=1) + "\n")
    md = (f"# What the text adds: {args.dataset}, {args.users} users, seed {args.seed}\n\nCommand: `{cmd_line}`  \n"
          f"Test NDCG@10 (LLMRank protocol; cold: targets and candidates kept out of training). Each row is its own "
          f"fitted bundle: {', '.join(BASE)}, the sequence model, and the text component. Reports: "
          f"`<protocol>-<text>/report.md`.\n\n{table(rows)}")
    (out / "ablation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
