"""Fit any registered calibrator from scorer outputs on the validation cases.

The runner scores the validation requests, then::

    cal = fit_calibrator("platt", val_results, val_labels)      # or "temperature", mode="sigmoid"
    cal.save(out / "platt.json")
    test_probs = [cal.transform(r.scores, r.probabilities) for r in test_results]

``val_labels[k]`` holds one 0/1 label per candidate of validation request ``k``. Only
validation targets may reach ``fit``: nothing here looks at test data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, UnknownNameError
from .base import CALIBRATORS, Calibrator


def flatten_results(results: Sequence[Any], labels: Sequence[Any]) -> dict[str, np.ndarray]:
    """Flat ``scores``, ``probabilities``, ``labels`` and ``groups`` (request index) arrays."""
    if len(results) != len(labels):
        raise InvalidRequestError(f"{len(results)} results but {len(labels)} label lists", param="labels")
    scores, probs, ys, groups = [], [], [], []
    for k, (res, lab) in enumerate(zip(results, labels)):
        s = np.asarray(res.scores, dtype=float).reshape(-1)
        y = np.asarray(lab, dtype=float).reshape(-1)
        if y.shape != s.shape:
            raise InvalidRequestError(f"request {k}: {y.shape[0]} labels for {s.shape[0]} candidates", param="labels")
        scores.append(s)
        probs.append(np.asarray(res.probabilities, dtype=float).reshape(-1))
        ys.append(y)
        groups.append(np.full(s.shape[0], k))
    if not scores:
        raise InvalidRequestError("no validation results to fit on", param="labels")
    return {
        "scores": np.concatenate(scores),
        "probabilities": np.concatenate(probs),
        "labels": np.concatenate(ys),
        "groups": np.concatenate(groups),
    }


def fit_calibrator(
    name: str | type[Calibrator], results: Sequence[Any], labels: Sequence[Any], **options: Any
) -> Calibrator:
    """Fit calibrator ``name`` on validation ``ScoreResult``s and their per-candidate labels."""
    if isinstance(name, str):
        if name not in CALIBRATORS:
            raise UnknownNameError("calibrator", name, CALIBRATORS, param="calibrator")
        cls = CALIBRATORS[name]
    else:
        cls = name
    flat = flatten_results(results, labels)
    return cls.fit(
        flat["scores"], flat["labels"], probabilities=flat["probabilities"], groups=flat["groups"], **options
    )
