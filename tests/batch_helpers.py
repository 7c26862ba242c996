"""Helpers for the batch tests: input files, and Recommender factories that Ray workers can import."""

from __future__ import annotations

import json
from pathlib import Path

from llm_recommender import Recommender


def slow_fake(delay_s: float = 0.25) -> Recommender:
    """A Recommender on the fake backend that takes ``delay_s`` per scoring call, so a job can be killed halfway."""
    from tests.server_fakes import SlowFakeBackend

    return Recommender(backend=SlowFakeBackend(delay_s=delay_s))


def fake() -> Recommender:
    from llm_recommender.backends.fake import FakeBackend

    # A deterministic, non-flat preference, so rankings differ between users and can be compared.
    return Recommender(backend=FakeBackend(score_fn=lambda prompt, token: (len(prompt) * 7 + len(token)) % 5 / 2))


def user_rows(n: int, n_candidates: int = 4) -> list[dict]:
    rows = []
    for u in range(n):
        rows.append({
            "user_id": f"u{u}",
            "history": [{"id": f"h{u}-{k}", "title": f"Watched {u}-{k}", "rating": 4.0} for k in range(3)],
            "candidates": [{"id": f"c{k}", "title": f"Movie {k} for {u}"} for k in range(n_candidates)],
        })
    return rows


def write_jsonl(path: Path, rows: list, raw_lines: tuple[str, ...] = ()) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        for line in raw_lines:
            fh.write(line + "\n")
    return path
