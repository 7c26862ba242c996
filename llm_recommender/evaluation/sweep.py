"""The position-bias sweep: the ground truth moved to each position, scored without and with permutation averaging.

The averaged curve uses the scorer's own ``permutations`` setting (the same code that
serves requests), never an averaging of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.splits import position_variants
from ..metrics import ranking_metrics, target_rank
from ..scorers import strategy_class


def position_grid(n_candidates: int, points: int | None) -> list[int]:
    """``points`` evenly spaced 0-based positions, first and last included (all when None)."""
    if points is None or points >= n_candidates:
        return list(range(n_candidates))
    return sorted({int(round(x)) for x in np.linspace(0, n_candidates - 1, max(points, 2))})


def position_sweep(runner: Any) -> dict[str, Any]:
    cfg = runner.config
    rec = runner.recommender
    out: dict[str, Any] = {}
    for strategy in cfg.position_strategies:
        if strategy not in cfg.scorers:
            continue
        n = cfg.position_users
        if strategy == "listwise" and cfg.listwise_position_users is not None:
            n = cfg.listwise_position_users
        users = set(runner.users_for(strategy)[:n])
        cases = [c for c in runner.cases["llmrank"]["test"] if c.user_id in users]
        positions = position_grid(cfg.n_candidates, cfg.position_points)
        variants = [v for c in cases for v in (position_variants(c)[p] for p in positions)]
        n_pos = len(positions)
        out[strategy] = {"users": len(cases), "positions": [p + 1 for p in positions]}
        for k in (1, cfg.sweep_permutations):
            scorer = strategy_class(strategy)(rec.backend, rec.renderer, rec.config_for(strategy, permutations=k))
            got = runner.llm.score(strategy, variants, scorer=scorer, desc=f"{strategy} position sweep K={k}")
            ranks = np.array([target_rank(r.scores, v.ground_truth_index, order=r.order)
                              for (r, _), v in zip(got, variants)]).reshape(len(cases), n_pos)
            gt_prob = np.array([float(r.probabilities[v.ground_truth_index]) for (r, _), v in zip(got, variants)])
            gt_prob = gt_prob.reshape(len(cases), n_pos)
            ndcg = [ranking_metrics(ranks[:, p])["ndcg@10"] for p in range(n_pos)]
            out[strategy][f"K={k}"] = {
                "permutations": k,
                "ndcg@10": ndcg,
                "hr@1": [ranking_metrics(ranks[:, p])["hr@1"] for p in range(n_pos)],
                "mean_rank": ranks.mean(axis=0).tolist(),
                "gt_probability": gt_prob.mean(axis=0).tolist(),
                "spread_ndcg@10": float(np.ptp(ndcg)),
            }
    return out
