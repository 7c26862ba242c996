"""Micro-batching at the gate: queued requests are ranked together in one rank_many call, each
answer is the one it would get alone, a departing client harms no one else, 429 still works."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from llm_recommender import Recommender
from llm_recommender.errors import BackendError
from llm_recommender.server import ServerSettings, create_app
from llm_recommender.server.errors import ClientDisconnectedError, ServerBusyError
from llm_recommender.server.gate import InferenceGate
from tests.server_fakes import SlowFakeBackend


def score(prompt: str, token: str) -> float:
    if "POISON" in prompt:
        raise BackendError("the backend failed on this prompt")
    return (len(prompt) * 7 + ord(token[0])) % 5 / 2  # differs between users, so mix-ups show


def requests_for(n: int) -> list[dict]:
    out = []
    for u in range(n):
        out.append({
            "history": [{"id": f"h{u}{k}", "title": f"Seen by user {u} " * (k + 1)} for k in range(u % 3 + 1)],
            "candidates": [{"id": f"c{k}", "title": f"Movie {k}{'!' * u}"} for k in range(4 + u % 3)],
            "top_k": 3, "strategy": ["verbalizer", "pointwise"][u % 2],
        })
    return out


def rounded(value):
    """Floats to 12 significant digits. The fake backend normalizes over the label tokens it is asked
    for, and a batch asks for the union of its requests' labels: the last bits differ. A real model's
    log-softmax does not depend on that set (the real-model test checks bit-identity)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def wait_until(cond, timeout: float = 10) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        event.wait(0.01)
    raise AssertionError("condition not reached")


def batched_server(n_queued: int, requests: list[dict], **settings):
    """Block the first request in the backend, queue the rest, release: they run as one batch."""
    release = threading.Event()
    backend = SlowFakeBackend(gate=release, score_fn=score)
    app = create_app(Recommender(backend=backend), ServerSettings(**{"max_batch": 8, "batch_wait_ms": 5, **settings}))
    with TestClient(app) as c, ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(c.post, "/v1/recommendations", json={**requests[0], "candidates": [{"id": "x", "title": "X"}]})
        assert backend.entered.wait(5)
        futures = [pool.submit(c.post, "/v1/recommendations", json=r) for r in requests]
        wait_until(lambda: app.state.serving.gate.waiting == n_queued)
        release.set()
        answers = [f.result(10) for f in futures]
        assert first.result(10).status_code == 200
        return answers, app.state.serving.gate, c.get("/metrics").text


def test_batched_answers_equal_the_answers_alone():
    requests = requests_for(6)
    alone = Recommender(backend=SlowFakeBackend(score_fn=score))
    expected = [alone.rank_request(r).model_dump(mode="json", exclude={"usage"}) for r in requests]
    answers, gate, metrics = batched_server(6, requests)
    assert [a.status_code for a in answers] == [200] * 6
    assert gate.batches == 2  # the blocking one, then the six queued ones together
    assert 'llm_rec_batch_size_bucket{le="4.0"} 1.0' in metrics and 'llm_rec_batch_size_count 2.0' in metrics
    got = [{k: v for k, v in a.json().items() if k != "usage"} for a in answers]
    assert rounded(got) == rounded(expected)


def test_batched_usage_is_each_requests_own():
    requests = requests_for(4)
    alone = Recommender(backend=SlowFakeBackend(score_fn=score))
    expected = [alone.rank_request(r).usage.model_dump() for r in requests]
    answers, _, _ = batched_server(4, requests)
    assert [a.json()["usage"] for a in answers] == expected


def test_a_failing_request_fails_alone_in_its_batch():
    requests = requests_for(4)
    requests[2]["candidates"][0]["title"] = "POISON"
    alone = Recommender(backend=SlowFakeBackend(score_fn=score))
    answers, _gate, _ = batched_server(4, requests)
    assert [a.status_code for a in answers] == [200, 200, 502, 200]
    assert answers[2].json()["error"]["code"] == "backend_error"
    for k in (0, 1, 3):
        assert rounded(answers[k].json()["items"]) == rounded(alone.rank_request(requests[k]).model_dump(mode="json")["items"])


def run_gate(scenario):
    return asyncio.run(scenario())


def recording_batch_fn(log: list[list[str]], release: threading.Event):
    def batch_fn(items: list[str]) -> list[str]:
        if "busy" in items:
            release.wait(5)
        log.append(list(items))
        return [f"answer {i}" for i in items]
    return batch_fn


def test_a_departing_client_leaves_the_rest_of_the_batch_alone():
    async def scenario():
        gate = InferenceGate(max_concurrency=1, max_queue=8, max_batch=8, batch_wait_ms=0)
        release, log = threading.Event(), []
        fn = recording_batch_fn(log, release)
        busy = asyncio.create_task(gate.run_batched(fn, "busy"))
        await asyncio.sleep(0.05)
        gone_b, gone_c = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(gate.run_batched(fn, "a"))
        b = asyncio.create_task(gate.run_batched(fn, "b", disconnected=gone_b.wait))
        c = asyncio.create_task(gate.run_batched(fn, "c", disconnected=gone_c.wait))
        d = asyncio.create_task(gate.run_batched(fn, "d"))
        await asyncio.sleep(0.05)
        assert gate.waiting == 4
        gone_b.set()  # b's client disconnects
        with pytest.raises(ClientDisconnectedError):
            await b
        d.cancel()  # d's task is cancelled (e.g. the server shuts its connection)
        with pytest.raises(asyncio.CancelledError):
            await d
        assert gate.waiting == 2 and gate.cancelled == 1
        release.set()
        assert await busy == "answer busy"
        assert await a == "answer a" and await c == "answer c"
        gate.close()
        return log

    assert run_gate(scenario) == [["busy"], ["a", "c"]]


def test_batches_are_capped_at_max_batch_and_gathered_within_the_wait():
    async def scenario():
        gate = InferenceGate(max_concurrency=1, max_queue=16, max_batch=2, batch_wait_ms=200)
        release, log = threading.Event(), []
        release.set()
        fn = recording_batch_fn(log, release)
        # an idle gate: requests arriving within batch_wait_ms go together
        first = [asyncio.create_task(gate.run_batched(fn, x)) for x in "pq"]
        assert await asyncio.gather(*first) == ["answer p", "answer q"]
        results = await asyncio.gather(*(gate.run_batched(fn, x) for x in "vwxyz"))
        assert results == [f"answer {x}" for x in "vwxyz"]
        gate.close()
        return log

    assert run_gate(scenario) == [["p", "q"], ["v", "w"], ["x", "y"], ["z"]]


def test_full_queue_still_answers_429_while_batching():
    async def scenario():
        gate = InferenceGate(max_concurrency=1, max_queue=2, max_batch=8, batch_wait_ms=0)
        release, log = threading.Event(), []
        fn = recording_batch_fn(log, release)
        busy = asyncio.create_task(gate.run_batched(fn, "busy"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(gate.run_batched(fn, x)) for x in "ab"]
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError) as info:
            await gate.run_batched(fn, "c")
        assert info.value.status_code == 429 and info.value.retry_after >= 1
        release.set()
        await busy
        assert await asyncio.gather(*queued) == ["answer a", "answer b"]
        gate.close()
        return log

    assert run_gate(scenario) == [["busy"], ["a", "b"]]


def test_max_batch_1_ranks_one_at_a_time(sample_request):
    backend = SlowFakeBackend(delay_s=0.002)
    app = create_app(Recommender(backend=backend), ServerSettings(max_batch=1))
    with TestClient(app) as c, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: c.post("/v1/recommendations", json=sample_request).status_code, range(16)))
        gate = app.state.serving.gate
    assert codes == [200] * 16 and gate.batches == 16 and backend.max_active == 1
