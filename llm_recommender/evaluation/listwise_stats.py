"""Shares of listwise requests whose generated rankings failed validation (from the scorer's attempt log)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..scorers.base import ScoreResult

LISTWISE_FAILURE_KINDS = ("not_json", "schema", "unknown_id", "duplicate_id", "missing_id")


def listwise_failure_shares(results: Sequence[ScoreResult]) -> dict[str, Any]:
    """Shares of listwise requests whose outputs failed, from ``details['attempts']``.

    Per request: ``failed_to_parse`` = some output was not JSON or broke the schema;
    ``unknown_id`` / ``duplicate_id`` / ``missing_id`` = some output had that problem;
    ``first_attempt_failed``; ``fallback`` = no valid ranking after the re-asks (the
    verbalizer scores were used). ``attempt_shares`` are the same kinds per generated output.
    """
    n = len(results)
    if n == 0:
        return {"requests": 0}
    per_request = {k: 0 for k in (*LISTWISE_FAILURE_KINDS, "failed_to_parse", "first_attempt_failed", "fallback")}
    kinds_per_attempt = {k: 0 for k in LISTWISE_FAILURE_KINDS}
    attempts_total = 0
    for r in results:
        attempts = r.details.get("attempts", [])
        attempts_total += len(attempts)
        kinds = {a.get("kind") for a in attempts if not a.get("ok")}
        for a in attempts:
            if not a.get("ok") and a.get("kind") in kinds_per_attempt:
                kinds_per_attempt[a["kind"]] += 1
        for k in LISTWISE_FAILURE_KINDS:
            per_request[k] += k in kinds
        per_request["failed_to_parse"] += bool(kinds & {"not_json", "schema"})
        per_request["first_attempt_failed"] += bool(attempts) and not attempts[0].get("ok")
        per_request["fallback"] += bool(r.details.get("fallback"))
    out: dict[str, Any] = {"requests": n, "attempts": attempts_total, "mean_attempts": attempts_total / n}
    out |= {k: v / n for k, v in per_request.items()}
    out["attempt_shares"] = {k: (v / attempts_total if attempts_total else 0.0) for k, v in kinds_per_attempt.items()}
    return out
