"""A tiny random model through a real vLLM engine (``backend="vllm"``) and a real vLLM server
started by ``llm-rec serve-model`` (``backend="openai"``): every strategy, the malformed-output
path (re-ask, then fallback), and the server's clean stop on SIGTERM.

One engine and one server for the whole module (CI has 2 cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.protocol import parse_request
from tests.vllm_support import fixed_requests, require_vllm, tiny_vllm_model_dir  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STRATEGIES = ["verbalizer", "pointwise", "listwise"]


@pytest.fixture(scope="module")
def engine_rec(tiny_vllm_model_dir):  # noqa: F811
    require_vllm()
    # "vllm", not "auto": on CPU "auto" picks transformers (quicker to start, less memory; see README).
    rec = Recommender(backend="vllm", model=str(tiny_vllm_model_dir), listwise_max_tokens=120)
    yield rec
    rec.backend.close()


@pytest.fixture(scope="module")
def served(tiny_vllm_model_dir, tmp_path_factory):  # noqa: F811
    """``llm-rec serve-model`` as a user runs it, on a free port; stopped by PID."""
    require_vllm()
    from llm_recommender.backends.vllm_server import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("serve-model") / "serve-model.log"
    cmd = [sys.executable, "-c", "from llm_recommender.cli import main; main()", "serve-model",
           "--model", str(tiny_vllm_model_dir), "--served-model-name", "tiny", "--port", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=fh, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve-model exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if _healthy(port):
            break
        time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"serve-model not healthy within 300 s:\n{log.read_text()[-3000:]}")
    info = {"proc": proc, "port": port, "url": url, "log": log}
    yield info
    if proc.poll() is None:  # the SIGTERM test did not run (e.g. -k selection)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@pytest.fixture(scope="module")
def server_rec(served, tiny_vllm_model_dir):  # noqa: F811
    return Recommender(backend="openai", base_url=served["url"], model=str(tiny_vllm_model_dir), listwise_max_tokens=120)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _listwise(rec, **settings):
    """The listwise scorer of ``rec`` with some settings changed (same backend: no new engine)."""
    from llm_recommender.scorers.llm.listwise import ListwiseScorer

    return ListwiseScorer(rec.backend, rec.renderer, rec.config_for("listwise", **settings))


def _rec(request, which):
    return request.getfixturevalue({"engine": "engine_rec", "server": "server_rec"}[which])


def test_the_vllm_engine_is_used(engine_rec):
    assert engine_rec.backend.name == "vllm"
    assert engine_rec.backend.context_length == 2048  # capped at the model's max_position_embeddings


@pytest.mark.parametrize("which", ["engine", "server"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_through_each_vllm_backend(request, which, strategy, sample_request):
    rec = _rec(request, which)
    resp = rec.rank_request({**sample_request, "strategy": strategy, "top_k": 4})
    assert resp.backend == ("vllm" if which == "engine" else "openai")
    assert sorted(i.id for i in resp.items) == ["10", "11", "12", "13"]
    assert all(np.isfinite(i.score) and 0.0 <= i.probability <= 1.0 for i in resp.items)
    assert resp.usage.prompt_tokens > 0


@pytest.mark.parametrize("which", ["engine", "server"])
def test_malformed_listwise_output_is_re_asked_then_falls_back(request, which, sample_request):
    """Validated path (what a generic server gets): the random model's JSON is schema-shaped but not a
    permutation (duplicate ids). Each request is re-asked ``listwise_retries`` times, then scored by the verbalizer."""
    rec = _rec(request, which)
    scorer = _listwise(rec, listwise_decoding="validated")
    verbalizer = rec.scorer("verbalizer").score(parse_request(sample_request))
    for result in scorer.score_many([parse_request(sample_request)] * 2):
        assert result.details["decoding"] == "validated" and result.details["fallback"]
        (fallback,) = [f for f in result.fallbacks if f.stage == "listwise"]
        assert fallback.used == "verbalizer"
        assert fallback.attempts == rec.settings.listwise.retries + 1
        assert fallback.reason.split(":")[0] in {"duplicate_id", "missing_id", "unknown_id", "schema", "not_json"}
        assert result.ranking() == verbalizer.ranking()


@pytest.mark.parametrize("which", ["engine", "server"])
@pytest.mark.parametrize("settings", [{"listwise_keys": "ids"}, {"listwise_keys": "ids", "listwise_top_k": 3}, {}],
                         ids=["ids", "ids-top3", "labels"])
def test_constrained_listwise_is_a_permutation_on_the_random_model(request, which, settings):
    """The same garbage model, constrained by our logits processor in the engine / behind the server."""
    rec = _rec(request, which)
    requests = [parse_request(r) for r in fixed_requests(3, n_candidates=6)]
    for result in _listwise(rec, **settings).score_many(requests):
        assert result.details["decoding"] == "constrained" and not result.details["fallback"]
        assert [a["ok"] for a in result.details["attempts"]] == [True]
        assert sorted(result.ranking()) == list(range(6))
        assert result.details["ranked"] == settings.get("listwise_top_k", 6)
        # labels: the probabilities come from the first key's slot, a distribution over the candidates
        assert result.details["probabilities"] == ("verbalizer" if settings else "first_key")
        assert abs(float(result.probabilities.sum()) - 1.0) < 1e-6


def test_constrained_rankings_agree_between_engine_and_server(engine_rec, server_rec):
    requests = [parse_request(r) for r in fixed_requests(2, n_candidates=6)]
    a = [r.ranking() for r in _listwise(engine_rec).score_many(requests)]
    b = [r.ranking() for r in _listwise(server_rec).score_many(requests)]
    assert a == b


@pytest.mark.parametrize("which", ["engine", "server"])
def test_reasons_parse_or_are_recorded_as_fallback(request, which, sample_request):
    rec = _rec(request, which)
    resp = rec.rank_request({**sample_request, "reasons": True, "top_k": 2})
    for item in resp.items:
        assert item.reason is None or 0 < len(item.reason) <= rec.settings.reasons.max_chars
    if any(i.reason is None for i in resp.items):
        assert any(f.stage == "reason" for f in resp.fallbacks)


def test_engine_and_server_give_the_same_log_probs(engine_rec, server_rec):
    """Same vLLM kernels, same dtype, same token ids: the HTTP path adds no numeric change."""
    prompts = [engine_rec.backend.chat_prompt([{"role": "user", "content": r["candidates"][0]["title"]}])
               for r in fixed_requests(4)]
    ids = [engine_rec.backend.single_token_id(c) for c in "ABCDEF"]
    a = engine_rec.backend.next_token_logprobs(prompts, ids)
    b = server_rec.backend.next_token_logprobs(prompts, ids)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_batched_generation_with_different_schemas(engine_rec, server_rec):
    from llm_recommender.structured import ranking_schema

    prompts = [engine_rec.backend.chat_prompt([{"role": "user", "content": "rank"}])] * 3
    schemas = [ranking_schema(["a", "b"]), None, ranking_schema(["x", "y", "z"])]
    for backend in (engine_rec.backend, server_rec.backend):
        gens = backend.generate_batch(prompts, max_tokens=40, json_schemas=schemas)
        assert len(gens) == 3
        import json

        first, third = json.loads(gens[0].text), json.loads(gens[2].text)
        assert len(first["ranking"]) == 2 and set(first["ranking"]) <= {"a", "b"}
        assert len(third["ranking"]) == 3 and set(third["ranking"]) <= {"x", "y", "z"}


def test_serve_model_prints_the_url_and_stops_on_sigterm(served):
    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    out = proc.stdout.read().decode()
    assert served["url"] in out
    assert code == 0, served["log"].read_text()[-2000:]
    assert not _healthy(served["port"])
    # no vLLM process left behind (the server runs in its own process group)
    leftover = subprocess.run(["pgrep", "-f", "--", f"--port {served['port']}"], capture_output=True, text=True, check=False).stdout.split()
    assert [p for p in leftover if int(p) != os.getpid()] == []
