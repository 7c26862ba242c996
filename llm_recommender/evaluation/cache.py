"""On-disk cache of scorer outputs: one JSONL file per scorer, one line per scored case.

A line is ``{"key", "seconds", "result"}``; ``key`` hashes the case (protocol, split,
user, history ids, candidate ids in their shown order) and the signature of the scorer
(:func:`.scoring.cache_signature`: the JSON of the scorer's, the prompt renderer's and the
backend's configs, less fields that only change speed, and the templates' hash), so a
changed model, backend, scorer or prompt option or candidate order is a miss, never a
stale hit, while a setting no scorer reads (reasons, retrieval, threads) shares the cache. Lines are appended (and flushed) as each batch finishes: an interrupted run
loses at most the batch in flight, and a torn last line is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.splits import EvalCase
from ..protocol import Fallback
from ..scorers.base import ScoreResult

# details worth keeping (JSON-safe); vectors and other bulky entries are dropped
KEPT_DETAILS = ("attempts", "fallback", "label_mass", "permutations", "yes_no_mass", "counts", "components")


def case_key(case: EvalCase, config: dict[str, Any]) -> str:
    payload = [
        case.protocol,
        case.split,
        case.user_id,
        case.history_ids,
        case.candidate_ids,
        config,
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def result_to_json(result: ScoreResult) -> dict[str, Any]:
    details = {k: result.details[k] for k in KEPT_DETAILS if k in result.details}
    return {
        "scores": np.asarray(result.scores, dtype=float).tolist(),
        "probabilities": np.asarray(result.probabilities, dtype=float).tolist(),
        "history_used": int(result.history_used),
        "order": None if result.order is None else [int(i) for i in result.order],
        "fallbacks": [f.model_dump() for f in result.fallbacks],
        "notes": list(result.notes),
        "details": json.loads(json.dumps(details, default=float)),
    }


def result_from_json(data: dict[str, Any]) -> ScoreResult:
    return ScoreResult(
        scores=np.asarray(data["scores"], dtype=float),
        probabilities=np.asarray(data["probabilities"], dtype=float),
        history_used=int(data["history_used"]),
        order=data.get("order"),
        fallbacks=[Fallback(**f) for f in data.get("fallbacks", [])],
        notes=list(data.get("notes", [])),
        details=dict(data.get("details", {})),
    )


class ResultCache:
    """Append-only JSONL store of ``key -> (result, seconds)``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, tuple[ScoreResult, float]] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._entries[row["key"]] = (result_from_json(row["result"]), float(row["seconds"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line torn by an interruption: that case is scored again

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[ScoreResult, float]:
        return self._entries[key]

    def put_many(self, rows: list[tuple[str, ScoreResult, float]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for key, result, seconds in rows:
                fh.write(json.dumps({"key": key, "seconds": seconds, "result": result_to_json(result)}) + "\n")
                self._entries[key] = (result, seconds)
            fh.flush()
