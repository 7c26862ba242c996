"""Bad input is a 4xx in the OpenAI error shape naming the field, never a 500; the API key."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from llm_recommender import Recommender  # noqa: E402
from llm_recommender.server import ServerSettings, create_app  # noqa: E402

KEY = "sk-test-0123456789"


@pytest.fixture
def client():
    app = create_app(Recommender(backend="fake"), ServerSettings(max_candidates=5, max_body_bytes=4096))
    with TestClient(app) as c:
        yield c


def assert_error(r, status: int, param: str | None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    assert err["param"] == param
    if code:
        assert err["code"] == code
    return err


CANDS = [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ("{not json", "body", "invalid_input"),
        ("[1, 2]", "body", None),
        ('"text"', "body", None),
        ("{}", "candidates", None),
        (json.dumps({"candidates": []}), "candidates", None),
        (json.dumps({"candidates": "a,b"}), "candidates", None),
        (json.dumps({"candidates": [{"title": "no id"}]}), "candidates[0].id", None),
        (json.dumps({"candidates": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]}), "candidates[1].id", None),
        (json.dumps({"candidates": [{"id": "", "title": "A"}]}), "candidates[0].id", None),
        (json.dumps({"candidates": [{"id": "a", "title": 5}]}), "candidates[0].title", None),
        (json.dumps({"candidates": CANDS, "top_k": "ten"}), "top_k", None),
        (json.dumps({"candidates": CANDS, "top_k": 0}), "top_k", None),
        (json.dumps({"candidates": CANDS, "history": {"id": "h"}}), "history", None),
        (json.dumps({"candidates": CANDS, "strategy": "magic"}), "strategy", "unknown_name"),
        (json.dumps({"candidates": CANDS, "surprise": 1}), "surprise", None),
        (json.dumps({"candidates": [{"id": str(i), "title": "t"} for i in range(6)]}), "candidates", "too_many_candidates"),
    ],
)
def test_native_bad_input_is_400_naming_the_field(client, body, param, code):
    r = client.post("/v1/recommendations", content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, param, code)


NAN_RATING = '{"history": [{"id": "h", "title": "H", "rating": NaN}], "candidates": [{"id": "a", "title": "A"}]}'


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (NAN_RATING, "history[0].rating"),
        (NAN_RATING.replace("NaN", "Infinity"), "history[0].rating"),
        (NAN_RATING.replace("NaN", "-Infinity"), "history[0].rating"),
        ('{"history": [{"id": "h", "title": "H", "timestamp": NaN}], "candidates": [{"id": "a", "title": "A"}]}',
         "history[0].timestamp"),
        ('{"candidates": [{"id": "a", "title": "A", "attributes": {"year": Infinity}}]}', "candidates[0].attributes"),
    ],
)
def test_non_finite_numbers_are_400_naming_the_field(client, body, param):
    r = client.post("/v1/recommendations", content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, param)
    # The chat door carries the same request inside a message.
    assert_error(chat(client, messages=[{"role": "user", "content": body}]), 400, f"messages[0].content.{param}")


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": "fake-model", **body})


def test_chat_bad_input(client):
    user = lambda content: [{"role": "user", "content": content}]  # noqa: E731
    assert_error(chat(client, messages=user("recommend me a film")), 400, "messages[0].content", "invalid_input")
    assert_error(chat(client, messages=user("[1]")), 400, "messages[0].content")
    assert_error(chat(client, messages=[{"role": "system", "content": "x"}]), 400, "messages")
    assert_error(chat(client, messages=[]), 400, "messages")
    assert_error(chat(client, messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role")
    dup = json.dumps({"candidates": [{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]})
    assert_error(chat(client, messages=[{"role": "user", "content": "x"}, {"role": "user", "content": dup}]),
                 400, "messages[1].content.candidates[1].id")
    assert_error(chat(client, messages=user("x"), recommendation={"candidates": []}), 400, "recommendation.candidates")
    assert_error(chat(client, messages=user("x"), recommendation=json.loads(dup)), 400, "recommendation.candidates[1].id")
    assert_error(chat(client, messages=user("x"), recommendation={"candidates": CANDS, "strategy": "magic"}),
                 400, "recommendation.strategy", "unknown_name")
    assert_error(chat(client, messages=user(json.dumps({"candidates": CANDS})), n=2), 400, "n")
    assert_error(chat(client, messages=user("x"), stream="yes please"), 400, "stream")
    assert_error(chat(client, messages=user("x"), response_format={"type": "xml"}), 400, "response_format.type")
    assert_error(client.post("/v1/chat/completions", json={"messages": user("x")}), 400, "model")


def test_unknown_model_is_404(client):
    err = assert_error(chat(client, model="gpt-4o", messages=[{"role": "user", "content": "{}"}]), 404, "model", "model_not_found")
    assert "fake-model" in err["message"]


def test_oversized_body_is_413(client):
    big = json.dumps({"candidates": [{"id": "a", "title": "x" * 5000}]})
    assert_error(client.post("/v1/recommendations", content=big, headers={"content-type": "application/json"}),
                 413, "body", "request_too_large")

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"x" * 1000

    assert_error(client.post("/v1/recommendations", content=chunks()), 413, "body", "request_too_large")


def test_unknown_route_and_method(client):
    assert_error(client.get("/v2/everything"), 404, None, "not_found")
    assert_error(client.get("/v1/recommendations"), 405, None, "method_not_allowed")


@pytest.fixture
def keyed():
    app = create_app(Recommender(backend="fake"), ServerSettings(api_key=KEY))
    with TestClient(app) as c:
        yield c


def test_api_key_required_on_v1(keyed, sample_request, caplog):
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"},
                    {"Authorization": f"Bearer {KEY}x"}):
        r = keyed.post("/v1/recommendations", json=sample_request, headers=headers)
        assert_error(r, 401, None, "invalid_api_key")
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert keyed.get("/v1/models").status_code == 401
    ok = {"Authorization": f"Bearer {KEY}"}
    assert keyed.post("/v1/recommendations", json=sample_request, headers=ok).status_code == 200
    assert keyed.get("/v1/models", headers=ok).status_code == 200
    assert keyed.get("/health").status_code == 200  # probes need no key
    assert KEY not in caplog.text
    assert KEY not in repr(ServerSettings(api_key=KEY))


def test_api_key_from_environment(monkeypatch, sample_request):
    monkeypatch.setenv("LLM_REC_SERVER_API_KEY", KEY)
    with TestClient(create_app(Recommender(backend="fake"), ServerSettings())) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_server_and_upstream_keys_are_separate(monkeypatch):
    from llm_recommender.settings import Settings

    monkeypatch.setenv("LLM_REC_SERVER_API_KEY", "server-secret")
    monkeypatch.setenv("LLM_REC_API_KEY", "ambiguous")  # the name both once read: now neither does
    monkeypatch.delenv("LLM_REC_UPSTREAM_API_KEY", raising=False)
    assert Settings().api_key is None
    assert ServerSettings().api_key.get_secret_value() == "server-secret"
    monkeypatch.setenv("LLM_REC_UPSTREAM_API_KEY", "upstream-secret")
    monkeypatch.delenv("LLM_REC_SERVER_API_KEY")
    assert Settings().api_key.get_secret_value() == "upstream-secret"
    assert ServerSettings().api_key is None
    assert Settings(api_key="k").api_key.get_secret_value() == "k"  # the field name still works in code


def test_backend_failure_is_5xx_in_openai_shape(sample_request):
    from llm_recommender.backends.fake import FakeBackend

    rec = Recommender(backend=FakeBackend(supports_logprobs=False))
    with TestClient(create_app(rec, ServerSettings())) as c:
        r = c.post("/v1/recommendations", json=sample_request)
        err = assert_error(r, 502, "backend", "capability_missing")
        assert err["type"] == "server_error"
