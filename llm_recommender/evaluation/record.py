"""The definitions of the figures a run records (the commit: :func:`llm_recommender.provenance.git_commit`)."""

from __future__ import annotations

from ..metrics import ECE_BINS


def definitions(n_candidates: int) -> dict[str, str]:
    """The meaning of every figure in results.json, for this run's candidate count."""
    neg = n_candidates - 1
    return {
        "ranking": f"test targets (ground truth + {neg} random negatives); ties never favour the ground truth; "
        "listwise rankings are scored as returned",
        "seconds_per_user": f"mean wall seconds to score one user's request ({n_candidates} candidates), over "
        "validation and test requests; LLM figures are the first (uncached) run's, recorded in the cache",
        "calibration.llmrank": f"per (user, candidate) row of the test sets: label 1 for the ground truth, 0 for the "
        f"{neg} negatives; calibrators fitted on the validation sets of the same users only",
        "calibration.likes": "like/dislike protocol: the test target alone, label = rating > 3; calibrators fitted on "
        "the validation targets only",
        "ece": f"{ECE_BINS} equal-width bins of P(label = 1)",
        "fused": "the bundle's fusion sigmoid(theta^T x + b) over its kept components' scores, fitted on validation "
        "targets only; its own probabilities are the 'uncalibrated' column",
    }
