"""``llm-rec serve`` as a real process on 127.0.0.1: the official openai client, raw HTTP,
load tests (fake backend and the real default model), disconnects and graceful shutdown.

Each server is started by the test on a free loopback port and stopped by PID (SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from llm_recommender import RankResponse  # noqa: E402
from llm_recommender.model_store import DEFAULT_MODEL  # noqa: E402
from tests.conftest import skip_or_fail  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-live-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, cmd: list[str], port: int, env: dict | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llm-rec-serve-", suffix=".log", delete=False)  # noqa: SIM115 - open for the process's life
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by PID: this process only
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def serve(*args: str, env: dict | None = None, ready_timeout: float = 60) -> LiveServer:
    port = free_port()
    cmd = [sys.executable, "-m", "llm_recommender.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    server = LiveServer(cmd, port, env)
    if not server.wait_ready(ready_timeout):
        server.stop()
        pytest.fail(f"server did not become ready:\n{server.output()[-3000:]}")
    return server


@pytest.fixture(scope="module")
def live():
    server = serve("--backend", "fake", "--api-key", KEY)
    yield server
    assert server.stop() in (0, -signal.SIGTERM)
    assert KEY not in server.output()  # the key is never logged


@pytest.fixture
def client(live):
    return openai.OpenAI(base_url=live.url + "/v1", api_key=KEY, max_retries=0, timeout=30)


def test_openai_client_models_and_chat(client, sample_request):
    assert [m.id for m in client.models.list()] == ["fake-model"]
    assert client.models.retrieve("fake-model").id == "fake-model"
    completion = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": json.dumps({**sample_request, "reasons": True})}],
        response_format={"type": "json_object"},
    )
    ranked = RankResponse.model_validate_json(completion.choices[0].message.content)
    assert [i.rank for i in ranked.items] == [1, 2, 3] and all(i.reason for i in ranked.items)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0
    # The request as an extra body field instead of the message text:
    completion = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "rank these"}],
                                                extra_body={"recommendation": sample_request})
    assert len(json.loads(completion.choices[0].message.content)["items"]) == 3


def test_openai_client_streaming(client, sample_request):
    stream = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": json.dumps(sample_request)}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(RankResponse.model_validate_json(content).items) == 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_openai_client_sees_typed_errors(live, client):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "{}"}])
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "films please"}])
    assert info.value.body["param"] == "messages[0].content"


def test_raw_http_native_endpoint_and_errors(live, sample_request):
    auth = {"Authorization": f"Bearer {KEY}"}
    url = live.url + "/v1/recommendations"
    r = httpx.post(url, json=sample_request, headers=auth)
    assert r.status_code == 200 and len(RankResponse.model_validate(r.json()).items) == 3

    def error(r, status, param):
        assert r.status_code == status, r.text
        assert r.json()["error"]["param"] == param
        return r.json()["error"]

    error(httpx.post(url, json=sample_request), 401, None)
    error(httpx.post(url, content=b'{"candidates": [', headers={**auth, "content-type": "application/json"}), 400, "body")
    error(httpx.post(url, json={"candidates": [{"id": 1, "title": 2}]}, headers=auth), 400, "candidates[0].title")
    dup = {"candidates": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]}
    error(httpx.post(url, json=dup, headers=auth), 400, "candidates[1].id")
    error(httpx.post(url, json={"history": [], "top_k": 3}, headers=auth), 400, "candidates")
    many = {"candidates": [{"id": str(i), "title": f"t{i}"} for i in range(101)]}
    assert error(httpx.post(url, json=many, headers=auth), 400, "candidates")["code"] == "too_many_candidates"
    big = b'{"candidates": [{"id": "a", "title": "' + b"x" * 2_000_000 + b'"}]}'
    error(httpx.post(url, content=big, headers={**auth, "content-type": "application/json"}), 413, "body")
    error(httpx.post(live.url + "/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "{}"}]},
                     headers=auth), 404, "model")
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    metrics = httpx.get(live.url + "/metrics").text
    assert 'llm_rec_request_errors_total{path="/v1/recommendations",status="413"}' in metrics
    assert "llm_rec_queue_depth" in metrics and "llm_rec_request_duration_seconds_bucket" in metrics


def run_load_test(*args: str) -> dict:
    cmd = [sys.executable, str(REPO / "eval" / "load_test.py"), *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(f"\nload test: {result['requests']} requests, {result['clients']} clients, {result['requests_per_s']} req/s, "
          f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms, statuses {result['statuses']}")
    return result


def test_load_fake_backend(live):
    result = run_load_test("--url", live.url, "--api-key", KEY, "--clients", "32", "--requests", "320", "--max-seconds", "120")
    assert result["requests"] == 320 and result["statuses"] == {"200": 320}
    assert result["server_errors"] == 0 and result["malformed"] == {}


def test_load_two_replicas_round_robin():
    """Two `llm-rec serve` processes (fake backend) behind the load test's round robin: both answer, 0 errors."""
    result = run_load_test("--spawn", "--replicas", "2", "--backend", "fake", "--clients", "8", "--requests", "40",
                           "--max-seconds", "60", "--startup-timeout", "120")
    assert result["requests"] == 40 and result["statuses"] == {"200": 40}
    assert result["server_errors"] == 0 and result["malformed"] == {}
    replicas = result["replicas"]
    assert len({r["url"] for r in replicas}) == 2  # two servers, two ports
    assert [r["requests"] for r in replicas] == [20, 20] and all(r["statuses"] == {"200": 20} for r in replicas)


def test_load_two_replicas_share_one_upstream(default_model_dir):
    """`--backend openai --base-url`: both replicas rank through ONE OpenAI-compatible upstream (scripted here)."""
    from tests.integration.test_openai_errors import ScriptedServer

    upstream = ScriptedServer()
    try:
        result = run_load_test("--spawn", "--replicas", "2", "--backend", "openai", "--base-url", upstream.url,
                               "--endpoint", "native", "--clients", "4", "--requests", "8", "--candidates", "4",
                               "--max-seconds", "120", "--startup-timeout", "240")
    finally:
        upstream.stop()
    assert result["statuses"] == {"200": 8} and result["server_errors"] == 0 and result["malformed"] == {}
    assert [r["requests"] for r in result["replicas"]] == [4, 4]
    assert result["model"] == DEFAULT_MODEL and result["base_url"] == upstream.url
    # every ranking went upstream: one verbalizer prompt each (the replicas may batch several per request)
    assert sum(len(body["prompt"]) for body in upstream.requests) == 8


def test_disconnect_drops_queued_work_and_sigterm_finishes_in_flight(sample_request):
    port = free_port()
    server = LiveServer([sys.executable, str(REPO / "tests" / "integration" / "_server_launcher.py"), str(port), "3"], port)
    try:
        assert server.wait_ready(60), server.output()[-3000:]
        url = server.url + "/v1/recommendations"
        results: dict[str, int] = {}

        def post(name: str) -> None:
            results[name] = httpx.post(url, json=sample_request, timeout=30).status_code

        def metric(name: str) -> float:
            for line in httpx.get(server.url + "/metrics").text.splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
            return 0.0

        def wait_for(cond, timeout=10.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if cond():
                    return True
                time.sleep(0.05)
            return False

        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert wait_for(lambda: metric("llm_rec_inference_running") == 1)
        # A client that gives up while queued: its ranking must never run.
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url, json=sample_request, timeout=0.3)
        assert wait_for(lambda: metric("llm_rec_cancelled_total") == 1)
        queued = threading.Thread(target=post, args=("queued",))
        queued.start()
        assert wait_for(lambda: metric("llm_rec_queue_depth") == 1)
        server.proc.send_signal(signal.SIGTERM)  # graceful: in-flight and queued requests finish
        first.join(30)
        queued.join(30)
        assert results == {"first": 200, "queued": 200}
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health", timeout=2)
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_load_real_default_model(default_model_dir):
    """A handful of requests through the embedded SmolLM2 (transformers backend)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"torch unavailable: {exc}")
    result = run_load_test("--spawn", "--backend", "transformers", "--clients", "4", "--requests", "8",
                           "--candidates", "5", "--max-seconds", "240", "--startup-timeout", "300")
    assert result["requests"] == 8 and result["statuses"] == {"200": 8}
    assert result["model"] == DEFAULT_MODEL
