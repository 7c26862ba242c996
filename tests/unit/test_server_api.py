"""The server's endpoints in-process (TestClient), with the fake backend and the real pipeline."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from llm_recommender import RankResponse, Recommender  # noqa: E402
from llm_recommender.server import ServerSettings, create_app  # noqa: E402


@pytest.fixture
def client():
    app = create_app(Recommender(backend="fake"), ServerSettings())
    with TestClient(app) as c:
        yield c


def chat_body(request: dict, **extra) -> dict:
    return {"model": "fake-model", "messages": [{"role": "system", "content": "rank"},
                                                {"role": "user", "content": json.dumps(request)}], **extra}


def test_models_list_and_retrieve(client):
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["fake-model"]
    assert body["data"][0]["object"] == "model"
    assert client.get("/v1/models/fake-model").json()["id"] == "fake-model"
    r = client.get("/v1/models/other")
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_native_endpoint_returns_rank_response(client, sample_request):
    r = client.post("/v1/recommendations", json={**sample_request, "reasons": True})
    assert r.status_code == 200
    resp = RankResponse.model_validate(r.json())
    assert len(resp.items) == 3 and [i.rank for i in resp.items] == [1, 2, 3]
    assert {i.id for i in resp.items} <= {c["id"] for c in sample_request["candidates"]}
    assert all(i.reason for i in resp.items)
    assert resp.usage.forward_passes >= 1


def test_chat_completion_from_last_user_message(client, sample_request):
    r = client.post("/v1/chat/completions", json=chat_body(sample_request))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    ranked = RankResponse.model_validate_json(choice["message"]["content"])
    assert len(ranked.items) == 3
    usage = body["usage"]
    assert usage["prompt_tokens"] == ranked.usage.prompt_tokens > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_completion_from_extra_body_field_and_content_parts(client, sample_request):
    r = client.post("/v1/chat/completions", json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}],
                                                 "recommendation": sample_request})
    assert r.status_code == 200
    parts = {"model": "fake-model", "messages": [{"role": "user", "content": [
        {"type": "text", "text": json.dumps(sample_request)[:10]}, {"type": "text", "text": json.dumps(sample_request)[10:]}]}]}
    assert client.post("/v1/chat/completions", json=parts).status_code == 200


def test_chat_accepts_unused_openai_fields(client, sample_request):
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, temperature=0.7, seed=1, user="u", logit_bias={}))
    assert r.status_code == 200


def sse_events(text: str) -> list:
    events = [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streaming_chunks_concatenate_to_the_same_content(client, sample_request):
    plain = client.post("/v1/chat/completions", json=chat_body(sample_request)).json()
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = sse_events(r.text)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert json.loads(content)["items"] == json.loads(plain["choices"][0]["message"]["content"])["items"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert len(chunks) >= 3 + 3  # role, one piece per ranked item, closing piece, finish, usage


def test_streaming_without_usage_option_sends_no_usage(client, sample_request):
    chunks = sse_events(client.post("/v1/chat/completions", json=chat_body(sample_request, stream=True)).text)
    assert all("usage" not in c for c in chunks)


def test_response_format_json_object_and_schema_honoured(client, sample_request):
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, response_format={"type": "json_object"}))
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    schema = RankResponse.model_json_schema()
    fmt = {"type": "json_schema", "json_schema": {"name": "ranking", "schema": schema, "strict": True}}
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, response_format=fmt))
    assert r.status_code == 200
    # A schema the ranking cannot satisfy is refused rather than silently ignored.
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["answer"]}}}
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, response_format=fmt))
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema.schema"
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
    r = client.post("/v1/chat/completions", json=chat_body(sample_request, response_format=fmt))
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema.schema"


def test_health_and_metrics(client, sample_request):
    assert client.get("/health").json() == {"status": "ok", "model": "fake-model", "detail": None}
    client.post("/v1/recommendations", json=sample_request)
    client.post("/v1/recommendations", json={"candidates": []})
    text = client.get("/metrics").text
    assert 'llm_rec_requests_total{method="POST",path="/v1/recommendations",status="200"} 1.0' in text
    assert 'llm_rec_request_errors_total{path="/v1/recommendations",status="400"} 1.0' in text
    assert "llm_rec_request_duration_seconds_bucket" in text
    assert "llm_rec_queue_depth 0.0" in text
    assert "llm_rec_model_ready 1.0" in text


def test_openapi_documents_native_endpoint(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/recommendations"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RankRequest")
    assert "RankResponse" in spec["components"]["schemas"]
    assert "/v1/chat/completions" in spec["paths"] and "/v1/models" in spec["paths"]


def test_health_is_503_until_the_model_is_loaded(sample_request):
    release = threading.Event()

    def load():
        release.wait(10)
        return Recommender(backend="fake")

    with TestClient(create_app(load, ServerSettings())) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = c.post("/v1/recommendations", json=sample_request)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready" and "Retry-After" in r.headers
        release.set()
        for _ in range(100):
            if c.get("/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert c.get("/health").json()["status"] == "ok"
        assert c.post("/v1/recommendations", json=sample_request).status_code == 200


def test_failed_load_is_reported():
    def load():
        raise RuntimeError("no such model folder")

    failures = []
    with TestClient(create_app(load, ServerSettings(), on_load_failure=failures.append)) as c:
        for _ in range(100):
            if failures:
                break
            threading.Event().wait(0.05)
        r = c.get("/health")
        assert r.status_code == 503 and r.json() == {"status": "failed", "model": None, "detail": "no such model folder"}
        assert c.get("/v1/models").status_code == 503
