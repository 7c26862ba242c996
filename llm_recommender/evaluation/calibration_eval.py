"""Per-scorer metrics of a run: ranking on test, and probabilities before/after calibrators fitted on validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..calibration import fit_calibrator
from ..data.splits import EvalCase
from ..metrics import probability_metrics, ranking_metrics, reliability_bins, target_rank
from ..scorers import scorer_class
from ..scorers.base import ScoreResult
from .listwise_stats import listwise_failure_shares

CALIBRATOR_NAMES = ("platt", "temperature", "isotonic")
# Scorers whose probabilities are a distribution over the request's candidates: temperature
# scaling keeps them one (softmax mode), and they mean nothing for a single candidate.
DISTRIBUTION_SCORERS = ("verbalizer", "listwise")


def assert_validation(cases: Sequence[EvalCase]) -> None:
    bad = [c for c in cases if c.split != "valid"]
    if bad:
        raise AssertionError(f"calibration must see validation targets only; got a {bad[0].split!r} case")


def fit_on_validation(name: str, results: Sequence[ScoreResult], cases: Sequence[EvalCase], **options: Any) -> Any:
    """Every calibrator of a run is fitted here, on validation cases only."""
    assert_validation(cases)
    return fit_calibrator(name, list(results), [list(c.labels) for c in cases], **options)


def _flat(results: Sequence[ScoreResult], cases: Sequence[EvalCase]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.asarray(c.labels, dtype=float) for c in cases])
    probs = np.concatenate([np.clip(np.asarray(r.probabilities, dtype=float), 0.0, 1.0) for r in results])
    return labels, probs


def evaluate_scorer(runner: Any, set_name: str, name: str) -> dict[str, Any]:
    scored = runner.scored[set_name][name]
    test_cases = [c for c in runner.cases[set_name]["test"] if c.user_id in scored["test"]]
    val_cases = [c for c in runner.cases[set_name]["valid"] if c.user_id in scored["valid"]]
    test_res = [scored["test"][c.user_id][0] for c in test_cases]
    val_res = [scored["valid"][c.user_id][0] for c in val_cases]
    secs = [s for split in ("valid", "test") for _, s in scored[split].values()]
    entry: dict[str, Any] = {"users": len(test_cases), "seconds_per_user": float(np.mean(secs)) if secs else None}
    if set_name == "llmrank":
        entry["ranking"] = ranking_metrics(
            target_rank(r.scores, c.ground_truth_index, order=r.order) for r, c in zip(test_res, test_cases))
    labels, probs = _flat(test_res, test_cases)
    if name in DISTRIBUTION_SCORERS and set_name == "likes":
        entry["note"] = "probability is a distribution over the candidates: constant for one candidate"
    cal: dict[str, Any] = {
        "uncalibrated": {**probability_metrics(labels, probs),
                         "reliability": [b.to_dict() for b in reliability_bins(labels, probs)]}
    }
    for cname in runner.config.calibrators:
        opts: dict[str, Any] = {}
        if cname == "temperature":
            opts["mode"] = "softmax" if (set_name == "llmrank" and name in DISTRIBUTION_SCORERS) else "sigmoid"
        try:
            model = fit_on_validation(cname, val_res, val_cases, **opts)
        except Exception as exc:  # e.g. one class only in a tiny validation set
            cal[cname] = {"error": str(exc)}
            continue
        if scorer_class(name).needs_llm:  # recorded in the saved file: Recommender refuses it for anything else
            model.fitted_for = runner.recommender.calibration_key(name)
        runner.fitted_calibrators[f"{set_name}/{name}/{cname}"] = model
        p = np.concatenate([np.clip(model.transform(r.scores, r.probabilities), 0, 1) for r in test_res])
        cal[cname] = {**probability_metrics(labels, p), "reliability": [b.to_dict() for b in reliability_bins(labels, p)]}
    entry["calibration"] = cal
    if name == "listwise":
        entry["listwise_failures"] = listwise_failure_shares(val_res + test_res)
    return entry
