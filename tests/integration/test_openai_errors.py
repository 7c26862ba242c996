"""The ``openai`` backend against a real local HTTP server that misbehaves on purpose.

The server (stdlib ``http.server`` on 127.0.0.1) answers ``GET /v1/models`` and plays a
script of replies to ``POST /v1/completions``: 500, 429, a closed connection, invalid
JSON, a stall past the timeout, 4xx errors, and well-formed replies in the OpenAI shape.
The backend runs for real over loopback; only the server is scripted.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from llm_recommender.errors import BackendError, CapabilityError, InvalidRequestError
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration

MODEL = "scripted-model"


class ScriptedServer:
    """Replies to POST /v1/completions come from ``script`` in order; then ``default``."""

    def __init__(self) -> None:
        self.script: list[object] = []
        self.default: object = "ok"
        self.requests: list[dict] = []
        self.auth: list[str | None] = []  # Authorization header of every request
        self.models = [MODEL]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except BrokenPipeError:  # the client gave up (the timeout test)
                    pass

            def do_GET(self) -> None:
                outer.auth.append(self.headers.get("Authorization"))
                data = [{"id": m, "object": "model", "max_model_len": 2048} for m in outer.models]
                self._send(200, json.dumps({"object": "list", "data": data}).encode())

            def do_POST(self) -> None:
                outer.auth.append(self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                action = outer.script.pop(0) if outer.script else outer.default
                if callable(action):
                    action = action(body)
                if action == "close":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "invalid_json":
                    self._send(200, b'{"id": "cmpl-1", "choices": [{"text": "tru')
                    return
                if action == "stall":
                    time.sleep(1.5)
                    action = "ok"
                if isinstance(action, tuple):  # (status, message[, headers])
                    status, message, *rest = action
                    err = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}}
                    self._send(status, json.dumps(err).encode(), rest[0] if rest else None)
                    return
                if action == "ok":
                    action = completion(body)
                self._send(200, json.dumps(action).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict, *, label_keys: str = "ids", drop: int | None = None, with_logprobs: bool = True) -> dict:
    """A well-formed completions reply; label log-probs decrease with the label's position."""
    prompts = body.get("prompt") or body["prompt_embeds"]
    ids = body.get("logprob_token_ids") or []
    choices = []
    for i, _ in enumerate(prompts):
        top = {}
        for j, tid in enumerate(ids):
            if j == drop:
                continue
            key = f"token_id:{tid}" if label_keys == "ids" else label_keys[j]
            top[key] = -1.0 - 0.5 * j
        lp = {"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [top], "text_offset": [0]} if with_logprobs else None
        text = json.dumps({"reason": "scripted"}) if body.get("max_tokens", 1) > 1 else "A"
        choices.append({"index": i, "text": text, "finish_reason": "stop", "logprobs": lp})
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": MODEL, "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}


@pytest.fixture(scope="module")
def server():
    srv = ScriptedServer()
    yield srv
    srv.stop()


@pytest.fixture
def backend(server, default_model_dir):
    try:
        from llm_recommender.backends.openai_backend import OpenAIBackend
    except ImportError as exc:  # pragma: no cover
        skip_or_fail(f"openai backend unavailable: {exc}")
    try:
        import openai  # noqa: F401
    except ImportError:
        skip_or_fail("the openai client is not installed (pip install 'llm-recommender[openai]')")
    server.script.clear()
    server.requests.clear()
    server.default = "ok"
    b = OpenAIBackend(base_url=server.url, tokenizer=str(default_model_dir), request_timeout=1.0,
                      max_retries=2, retry_backoff=0.01)
    yield b
    b.close()


def label_ids(backend, n=3):
    return [backend.single_token_id(c) for c in "ABCDEFGHIJ"[:n]]


def test_well_formed_reply_gives_exact_label_logprobs(backend, server):
    lp = backend.next_token_logprobs(["hello", "world"], label_ids(backend))
    np.testing.assert_allclose(lp, [[-1.0, -1.5, -2.0]] * 2)
    sent = server.requests[-1]
    assert sent["model"] == MODEL and sent["temperature"] == 0 and sent["max_tokens"] == 1
    assert sent["logprob_token_ids"] == label_ids(backend) and sent["return_tokens_as_token_ids"] is True
    assert isinstance(sent["prompt"][0], list)  # token ids, tokenized locally
    assert backend.retries_done == 0


def test_prompt_embeddings_travel_as_tensors_and_a_retry_sends_them_again(backend, server, default_model_dir):
    """The ranker's soft tokens over HTTP: each prompt's input embeddings (the served weights' rows, the soft
    vectors in their slots) as a base64 tensor, with the label ids; a retried request is the same request."""
    import base64
    import io

    import torch
    from safetensors import safe_open

    from llm_recommender.backends.base import EmbedsPrompt

    with safe_open(str(default_model_dir / "model.safetensors"), "pt") as f:
        table = f.get_tensor(next(k for k in f.keys() if k.endswith("embed_tokens.weight"))).float()  # noqa: SIM118
    ids = backend.encode("hello there")
    soft = torch.full((1, table.shape[1]), 0.5)
    server.script = [(503, "overloaded")]
    lp = backend.embeds_next_token_logprobs([EmbedsPrompt(ids, [1], soft)], label_ids(backend))
    np.testing.assert_allclose(lp, [[-1.0, -1.5, -2.0]])
    first, second = server.requests[-2:]
    assert first == second and backend.retries_done == 1
    assert second.get("prompt") is None and second["logprob_token_ids"] == label_ids(backend)
    rows = torch.load(io.BytesIO(base64.b64decode(second["prompt_embeds"][0])), weights_only=True)
    assert rows.shape == (len(ids), table.shape[1])
    torch.testing.assert_close(rows[0], table[ids[0]])
    torch.testing.assert_close(rows[2:], table[ids[2:]])
    assert bool((rows[1] == 0.5).all())  # the soft token in its slot


@pytest.mark.parametrize(
    "failure",
    [(500, "internal error"), (503, "overloaded"), (429, "slow down", {"Retry-After": "0"}), "close", "invalid_json", "stall"],
    ids=["500", "503", "429", "closed-connection", "invalid-json", "timeout"],
)
def test_transient_failures_are_retried_then_succeed(backend, server, failure):
    server.script = [failure]
    lp = backend.next_token_logprobs(["hello"], label_ids(backend))
    np.testing.assert_allclose(lp, [[-1.0, -1.5, -2.0]])
    assert backend.retries_done == 1
    assert len(server.requests) == 2


def test_retries_are_bounded_and_the_error_says_why(backend, server):
    server.default = (500, "boom")
    with pytest.raises(BackendError) as info:
        backend.next_token_logprobs(["hello"], label_ids(backend))
    assert len(server.requests) == 3  # 1 + max_retries
    assert "3 attempt(s)" in str(info.value) and "HTTP 500: boom" in str(info.value)
    assert info.value.param == "base_url"


def test_persistent_invalid_json_is_an_error_not_a_score(backend, server):
    server.default = "invalid_json"
    with pytest.raises(BackendError, match="invalid reply"):
        backend.next_token_logprobs(["hello"], label_ids(backend))
    assert len(server.requests) == 3


def test_wrong_number_of_choices_is_detected(backend, server):
    server.default = lambda body: completion({**body, "prompt": body["prompt"][:1]})
    with pytest.raises(BackendError, match="expected 2 choices"):
        backend.next_token_logprobs(["a", "b"], label_ids(backend))


def test_client_errors_are_not_retried(backend, server):
    server.script = [(400, "prompt is too long")]
    with pytest.raises(BackendError, match="rejected the request .*prompt is too long") as info:
        backend.next_token_logprobs(["hello"], label_ids(backend))
    assert not isinstance(info.value, CapabilityError)
    assert len(server.requests) == 1


def test_bad_credentials_name_the_api_key(backend, server):
    server.script = [(401, "invalid api key")]
    with pytest.raises(BackendError) as info:
        backend.generate(["hello"], max_tokens=5)
    assert info.value.param == "api_key" and len(server.requests) == 1


def test_the_servers_own_key_is_never_sent_upstream(server, default_model_dir, monkeypatch):
    from llm_recommender.backends.openai_backend import OpenAIBackend

    # The key that protects `llm-rec serve`, under its own name and under the name both once shared.
    for name in ("LLM_REC_SERVER_API_KEY", "LLM_REC_API_KEY"):
        monkeypatch.setenv(name, "server-secret")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("LLM_REC_UPSTREAM_API_KEY", raising=False)
    server.auth.clear()
    b = OpenAIBackend(base_url=server.url, tokenizer=str(default_model_dir), request_timeout=1.0)
    b.generate(["hello"], max_tokens=5)
    b.close()
    assert server.auth and all("server-secret" not in (a or "") for a in server.auth), server.auth

    monkeypatch.setenv("LLM_REC_UPSTREAM_API_KEY", "upstream-secret")
    server.auth.clear()
    b = OpenAIBackend(base_url=server.url, tokenizer=str(default_model_dir), request_timeout=1.0)
    b.close()
    assert server.auth == ["Bearer upstream-secret"]


def test_server_refusing_logprobs_is_a_capability_error(backend, server):
    server.script = [(400, "logprobs are not supported by this model")]
    with pytest.raises(CapabilityError, match="log-probabilities"):
        backend.next_token_logprobs(["hello"], label_ids(backend))


def test_reply_without_logprobs_is_a_capability_error(backend, server):
    server.default = lambda body: completion(body, with_logprobs=False)
    with pytest.raises(CapabilityError, match="no log-probabilities"):
        backend.next_token_logprobs(["hello"], label_ids(backend))


def test_label_outside_the_top_k_is_a_capability_error_never_a_guess(backend, server):
    server.default = lambda body: completion(body, drop=2)  # label C missing, as from a top-k-only server
    with pytest.raises(CapabilityError, match="not among them"):
        backend.next_token_logprobs(["hello"], label_ids(backend))


def test_text_keyed_top_logprobs_from_other_servers_are_mapped_back(backend, server):
    server.default = lambda body: completion(body, label_keys="ABC")  # server ignored return_tokens_as_token_ids
    lp = backend.next_token_logprobs(["hello"], label_ids(backend))
    np.testing.assert_allclose(lp, [[-1.0, -1.5, -2.0]])


def test_generation_sends_the_schema_as_response_format(backend, server):
    schema = {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]}
    gens = backend.generate_batch(["a", "b", "c"], max_tokens=20, json_schemas=[schema, None, schema])
    assert [g.text for g in gens] == [json.dumps({"reason": "scripted"})] * 3
    sent = sorted(server.requests, key=lambda r: len(r["prompt"]))
    assert len(sent) == 2  # one request per distinct schema
    assert "response_format" not in sent[0]
    assert sent[1]["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def test_recommender_through_the_scripted_server(server, default_model_dir, sample_request):
    pytest.importorskip("openai")
    from llm_recommender import Recommender

    server.script.clear()
    server.default = "ok"
    rec = Recommender(backend="openai", base_url=server.url, tokenizer=str(default_model_dir), max_retries=0)
    resp = rec.rank_request({**sample_request, "top_k": 4})
    assert resp.backend == "openai" and [i.id for i in resp.items] == ["10", "11", "12", "13"]  # A > B > C > D


def test_missing_base_url_and_unknown_model_are_client_errors(server, default_model_dir):
    pytest.importorskip("openai")
    from llm_recommender.backends.openai_backend import OpenAIBackend

    with pytest.raises(InvalidRequestError) as info:
        OpenAIBackend(tokenizer=str(default_model_dir))
    assert info.value.param == "base_url"
    with pytest.raises(InvalidRequestError, match="serves: scripted-model") as info:
        OpenAIBackend(base_url=server.url, served_model="other", tokenizer=str(default_model_dir))
    assert info.value.param == "served_model"


def test_unreachable_server_fails_after_bounded_retries(default_model_dir):
    pytest.importorskip("openai")
    from llm_recommender.backends.openai_backend import OpenAIBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(BackendError, match="connection failed"):
        OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", tokenizer=str(default_model_dir),
                      max_retries=2, retry_backoff=0.01)
    assert time.monotonic() - start < 10


# ---- constrained listwise over HTTP: only a server that honours vllm_xargs gets the spec --------------------


def test_a_server_that_ignores_vllm_xargs_is_asked_once_and_listwise_stays_validated(backend, server):
    assert backend.can_decode_permutations() is False  # its reply is not the forced ranking
    assert len(server.requests) == 1 and "llm_rec_permutation" in server.requests[0]["vllm_xargs"]
    assert backend.can_decode_permutations() is False and len(server.requests) == 1
    with pytest.raises(CapabilityError):
        backend.generate_permutations(["p"], [["a", "b"]], [2])


def test_a_server_that_refuses_vllm_xargs_keeps_the_validated_path(backend, server):
    server.script = [(400, "extra fields not permitted: vllm_xargs")]
    assert backend.can_decode_permutations() is False


def test_a_constraining_server_ranks_each_request_under_its_own_spec(backend, server, sample_request):
    from llm_recommender import Recommender
    from llm_recommender.backends.constrained import PermutationSpec
    from llm_recommender.protocol import parse_request

    def reply(body):  # a server running the processor, with a model that ranks keys in reverse
        if "vllm_xargs" not in body:
            return completion(body)
        spec = PermutationSpec.from_xargs(body["vllm_xargs"])
        keys = [backend.tokenizer.decode(list(item)) for item in spec.items][::-1][: spec.k]
        text = json.dumps({"ranking": keys})
        return {**completion({**body, "max_tokens": 1}), "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}

    server.default = reply
    rec = Recommender(backend=backend, strategy="listwise")
    (result,) = rec.scorer().score_many([parse_request(sample_request)])
    assert result.details["decoding"] == "constrained" and not result.details["fallback"]
    assert result.ranking() == [3, 2, 1, 0]
    sent = [r for r in server.requests if "vllm_xargs" in r]
    assert len(sent) == 2  # the probe, then the request
    assert sent[-1]["stop_token_ids"] == [backend.tokenizer.eos_token_id] and len(sent[-1]["prompt"]) == 1
