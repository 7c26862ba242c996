"""Micro-batching with the real default model: requests ranked together in one batch get
bit-identical answers to the ones they get alone (usage aside, see the unit tests)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_recommender import Recommender
from llm_recommender.sample_data import sample_request
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration


def test_batched_answers_are_bit_identical_with_the_default_model(default_model_dir):
    try:
        from fastapi.testclient import TestClient

        from llm_recommender.server import ServerSettings, create_app
    except ModuleNotFoundError as exc:
        skip_or_fail(f"server extras missing: {exc}")
    rec = Recommender(backend="transformers", threads=1)
    # different users, candidate counts and strategies in one batch
    requests = [sample_request(u, n_candidates=n, history_len=8, reasons=False, top_k=n)[0] | {"strategy": s}
                for u, n, s in (("1", 4, "verbalizer"), ("2", 6, "verbalizer"), ("3", 5, "pointwise"))]
    alone = [rec.rank_request(r).model_dump(mode="json", exclude={"usage"}) for r in requests]

    entered, release = threading.Event(), threading.Event()
    real_rank_many = rec.rank_many

    def held_rank_many(reqs):  # hold the first batch so the others queue up behind it
        if not entered.is_set():
            entered.set()
            release.wait(60)
        return real_rank_many(reqs)

    rec.rank_many = held_rank_many  # type: ignore[method-assign]
    app = create_app(rec, ServerSettings(max_batch=8, batch_wait_ms=5))
    with TestClient(app) as c, ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(c.post, "/v1/recommendations", json=requests[0])
        assert entered.wait(60)
        futures = [pool.submit(c.post, "/v1/recommendations", json=r) for r in requests]
        gate = app.state.serving.gate
        for _ in range(1000):
            if gate.waiting == len(requests):
                break
            threading.Event().wait(0.01)
        release.set()
        answers = [f.result(120) for f in futures]
        assert first.result(120).status_code == 200
        assert gate.batches == 2  # the held one, then the three together
    got = [{k: v for k, v in a.json().items() if k != "usage"} for a in answers]
    assert got == alone
