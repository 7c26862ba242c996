"""``report.md`` of an eval run: the run record, then one markdown table per result kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RANK_COLS = ("ndcg@1", "ndcg@5", "ndcg@10", "ndcg@20", "hr@1", "hr@5", "hr@10", "mrr")
PROB_COLS = ("auc", "log_loss", "brier", "ece")


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def ranking_table(scorers: dict[str, Any], expected: dict[str, float] | None = None) -> list[str]:
    rows = [
        [n, str(e["users"]), *(_f(e["ranking"][c]) for c in RANK_COLS), _f(e["seconds_per_user"], 3)]
        for n, e in scorers.items()
        if "ranking" in e
    ]
    if expected:
        rows.append(["*random, expected*", "-", *(_f(expected[c]) for c in RANK_COLS), "-"])
    return _table(["scorer", "users", *RANK_COLS, "s/user"], rows)


def calibration_table(scorers: dict[str, Any], calibrators: list[str]) -> list[str]:
    rows = []
    for name, e in scorers.items():
        for cal in ["uncalibrated", *calibrators]:
            m = e["calibration"].get(cal)
            if m is None:
                continue
            if "error" in m:
                rows.append([name, cal, "error: " + m["error"][:60], "", "", ""])
                continue
            rows.append([name, cal, *(_f(m[c]) for c in PROB_COLS)])
    return _table(["scorer", "calibrator", *PROB_COLS], rows)


def ece_summary(scorers: dict[str, Any], calibrators: list[str]) -> list[str]:
    rows = []
    for name, e in scorers.items():
        cal = e["calibration"]
        vals = [cal.get(c, {}).get("ece") for c in ["uncalibrated", *calibrators]]
        rows.append([name, str(e["users"]), *(_f(v) for v in vals)])
    return _table(["scorer", "users", "ECE before", *(f"ECE {c}" for c in calibrators)], rows)


def write_report(results: dict[str, Any], out: Path, plots: list[str]) -> None:
    run, cfg = results["run"], results["config"]
    cals = cfg["calibrators"]
    lines = [
        f"# Evaluation: {run['dataset']}, {run['protocol']} protocol, {run['users']} users, seed {run['seed']}",
        "",
    ]
    lines += [
        f"- command: `{run['command']}`",
        f"- model: {run['model'] or '-'}; backend: {run['backend'] or '-'}; git commit: {run['git_commit']}",
        *(f"- {name} scored with its own model: {e['model']}; backend: {e['backend']}"
          for name, e in run.get("engines", {}).items()),
        f"- run: {run['started']} -> {run['finished']} ({run['wall_seconds']} s wall, {run['new_llm_requests']} new LLM requests)",
        f"- history: up to {cfg['max_history']} items; candidates: {cfg['n_candidates']}; exclude history from negatives: {cfg['exclude_history']}; "
        f"permutations averaged in the main run: {cfg['permutations']}",
    ]
    if cfg.get("llm_history") is not None:
        lines.append(
            f"- LLM prompts show the most recent {cfg['llm_history']} history items (CPU time); "
            f"the baselines use all {cfg['max_history']}."
        )
    if cfg.get("llm_users") or cfg.get("listwise_users"):
        lines.append(
            f"- **LLM strategies on a subset** (CPU time): first {cfg.get('llm_users') or run['users']} sampled users; "
            f"listwise: first {cfg.get('listwise_users') or cfg.get('llm_users') or run['users']}. Every other scorer uses all "
            f"{run['users']} users; the subset tables below compare every scorer on the same users."
        )
    lines += [
        "",
        "## Ranking (test targets)",
        "",
        *ranking_table(results["sets"]["llmrank"]["scorers"], results["expected_random"]),
        "",
    ]
    lines.append(f"s/user: {results['definitions']['seconds_per_user']}.")
    for label, table in results["sets"]["llmrank"].get("subsets", {}).items():
        rows = [[n, *(_f(m[c]) for c in RANK_COLS)] for n, m in table.items()]
        lines += ["", f"### Every scorer on the {label}", "", *_table(["scorer", *RANK_COLS], rows)]
    for set_name, title in (
        ("llmrank", f"ranking candidates (label 1 = ground truth, 0 = the {cfg['n_candidates'] - 1} negatives)"),
        ("likes", "like/dislike (target alone, label = rating > 3)"),
    ):
        if set_name not in results["sets"]:
            continue
        sc = results["sets"][set_name]["scorers"]
        lines += [
            "",
            f"## Calibration on test, {title}",
            "",
            results["definitions"][f"calibration.{set_name}"] + ".",
            "",
        ]
        lines += [
            "ECE summary:",
            "",
            *ece_summary(sc, cals),
            "",
            "All probability metrics:",
            "",
            *calibration_table(sc, cals),
        ]
        notes = [f"- {n}: {e['note']}" for n, e in sc.items() if e.get("note")]
        if notes:
            lines += ["", *notes]
    lw = results["sets"]["llmrank"]["scorers"].get("listwise", {}).get("listwise_failures")
    if lw:
        keys = (
            "failed_to_parse",
            "not_json",
            "schema",
            "unknown_id",
            "duplicate_id",
            "missing_id",
            "first_attempt_failed",
            "fallback",
        )
        lines += [
            "",
            "## Listwise outputs (validation + test requests)",
            "",
            *_table(
                ["requests", "mean attempts", *keys],
                [[str(lw["requests"]), _f(lw["mean_attempts"], 2), *(_f(lw[k], 3) for k in keys)]],
            ),
        ]
        lines += [
            "",
            "Shares of requests with at least one output of that kind; fallback = no valid ranking after the re-asks (verbalizer order used).",
        ]
    bundle = results.get("bundle")
    if bundle:
        lines += ["", "## The bundle: components and fusion (fitted on the training split; fusion on validation)", ""]
        rows = [[c["name"], c["kind"], "yes" if c["kept"] else "no", _f(c.get("validation", {}).get("ndcg@10")),
                 _f(c.get("marginal_gain")), _f(c.get("fit_seconds"), 1), c.get("reason", "")]
                for c in bundle["components"]]
        lines += _table(["component", "kind", "in fusion", "validation NDCG@10 alone", "marginal gain (CV)",
                         "fit s", "why left out"], rows)
        coefs = bundle.get("fusion", {}).get("coefficients", {})
        if coefs:
            shown = ", ".join(f"{k} {v[0]:+.3f}" for k, v in coefs.items())
            lines += ["", f"Fusion weights (standardised): {shown}. Fit wall time: {bundle.get('fit_seconds')} s."]
    sweep = results.get("position_bias")
    if sweep:
        lines += ["", "## Position bias (test cases, the ground truth moved to each swept position)", ""]
        rows = []
        for strategy, entry in sweep.items():
            for curve in entry.values():
                if isinstance(curve, dict):
                    nd = curve["ndcg@10"]
                    rows.append(
                        [
                            strategy,
                            str(entry["users"]),
                            str(curve["permutations"]),
                            _f(sum(nd) / len(nd)),
                            _f(max(nd)),
                            _f(min(nd)),
                            _f(curve["spread_ndcg@10"]),
                            _f(curve["hr@1"][0]),
                            _f(curve["hr@1"][-1]),
                        ]
                    )
        lines += _table(
            [
                "strategy",
                "users",
                "orders averaged",
                "mean NDCG@10",
                "max",
                "min",
                "max-min",
                "HR@1 at first position",
                "HR@1 at last position",
            ],
            rows,
        )
        lines += [
            "",
            "pointwise is not swept: it scores each candidate in its own prompt, so it has no candidate position.",
        ]
        skipped = [s for s in ("verbalizer", "listwise") if s in cfg["scorers"] and s not in sweep]
        if skipped:
            lines.append(
                f"Not swept in this run (left out of --position-strategies for CPU time): {', '.join(skipped)}."
            )
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    (out / "report.md").write_text("\n".join(lines) + "\n")
