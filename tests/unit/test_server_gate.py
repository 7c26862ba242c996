"""Bounded concurrency: one ranking at a time, 429 + Retry-After beyond the queue,
queued work dropped when its client disconnects."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from llm_recommender import Recommender  # noqa: E402
from llm_recommender.server import ServerSettings, create_app  # noqa: E402
from llm_recommender.server.errors import ClientDisconnectedError, ServerBusyError  # noqa: E402
from llm_recommender.server.gate import InferenceGate  # noqa: E402
from tests.server_fakes import SlowFakeBackend  # noqa: E402


def test_rankings_never_overlap_and_all_answer(sample_request):
    backend = SlowFakeBackend(delay_s=0.002)
    app = create_app(Recommender(backend=backend), ServerSettings(max_concurrency=1, max_queue=64))
    with TestClient(app) as c, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: c.post("/v1/recommendations", json=sample_request).status_code, range(48)))
    assert codes == [200] * 48
    assert backend.max_active == 1


def test_full_queue_answers_429_with_retry_after(sample_request):
    release = threading.Event()
    backend = SlowFakeBackend(gate=release)
    app = create_app(Recommender(backend=backend), ServerSettings(max_concurrency=1, max_queue=1))
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/v1/recommendations", json=sample_request)
        assert backend.entered.wait(5)
        second = pool.submit(c.post, "/v1/recommendations", json=sample_request)  # waits in the queue
        serving = app.state.serving
        for _ in range(200):
            if serving.gate.waiting == 1:
                break
            threading.Event().wait(0.01)
        assert serving.gate.waiting == 1
        r = c.post("/v1/recommendations", json=sample_request)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "server_busy" and r.json()["error"]["type"] == "rate_limit_error"
        assert "llm_rec_queue_depth 1.0" in c.get("/metrics").text
        release.set()
        assert first.result(10).status_code == 200 and second.result(10).status_code == 200
        assert 'status="429"} 1.0' in c.get("/metrics").text


def test_disconnect_while_queued_drops_the_work():
    async def scenario():
        gate = InferenceGate(max_concurrency=1, max_queue=4)
        release = threading.Event()
        ran: list[str] = []

        def work(name):
            if name == "busy":
                release.wait(5)
            ran.append(name)
            return name

        gone = asyncio.Event()
        busy = asyncio.create_task(gate.run(work, "busy"))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(gate.run(work, "queued", disconnected=gone.wait))
        await asyncio.sleep(0.05)
        assert gate.waiting == 1
        gone.set()  # the client goes away
        with pytest.raises(ClientDisconnectedError):
            await queued
        assert gate.waiting == 0 and gate.cancelled == 1
        release.set()
        assert await busy == "busy"
        assert await gate.run(work, "after") == "after"  # the slot was not leaked
        gate.close()
        return ran

    assert asyncio.run(scenario()) == ["busy", "after"]


def test_gate_refuses_beyond_queue():
    async def scenario():
        gate = InferenceGate(max_concurrency=1, max_queue=0)
        release = threading.Event()
        busy = asyncio.create_task(gate.run(release.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError) as info:
            await gate.run(lambda: None)
        assert info.value.status_code == 429 and info.value.retry_after >= 1
        release.set()
        await busy
        gate.close()

    asyncio.run(scenario())
