"""Evaluation building blocks: protocols (splits, candidate sets, cases) and metrics.

>>> from llm_recommender.data import load_dataset
>>> from llm_recommender.evaluation import llmrank_cases, target_rank, ranking_metrics
>>> ds = load_dataset("ml-100k", "../shared/data/ml-100k")
>>> cases = llmrank_cases(ds, split="test", n_users=200, seed=0)
>>> # results = scorer.score_many([c.request for c in cases])
>>> # ranking_metrics(target_rank(r.scores, c.ground_truth_index) for r, c in zip(results, cases))
"""

from .metrics import (
    ReliabilityBin,
    auc,
    brier,
    ece,
    expected_random,
    hit_at,
    log_loss,
    ndcg_at,
    probability_metrics,
    ranking_metrics,
    reciprocal_rank,
    reliability_bins,
    target_rank,
)
from .protocols import (
    EvalCase,
    UserSplit,
    leave_one_out,
    llmrank_cases,
    make_case,
    pointwise_cases,
    position_variants,
    sample_users,
    training_interactions,
)

__all__ = [
    "EvalCase",
    "ReliabilityBin",
    "UserSplit",
    "auc",
    "brier",
    "ece",
    "expected_random",
    "hit_at",
    "leave_one_out",
    "llmrank_cases",
    "log_loss",
    "make_case",
    "ndcg_at",
    "pointwise_cases",
    "position_variants",
    "probability_metrics",
    "ranking_metrics",
    "reciprocal_rank",
    "reliability_bins",
    "sample_users",
    "target_rank",
    "training_interactions",
]
