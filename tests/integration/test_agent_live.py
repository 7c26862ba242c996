"""The agent on the chat endpoint: `llm-rec serve --bundle` as a real process on 127.0.0.1, driven by the
official openai client through a 3-turn conversation, streaming and not. The bundle is fitted on the
bundled MovieLens sample (components that need no LLM pass, so it takes seconds)."""

from __future__ import annotations

import re
import signal

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("rapidfuzz")

from tests.integration.test_server_live import serve  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from llm_recommender.bundle import FitConfig, fit_bundle

    cfg = FitConfig(dataset="ml-latest-small", components=["popularity", "cooccurrence", "itemknn"], valid_users=200)
    return fit_bundle(cfg, tmp_path_factory.mktemp("agent") / "bundle", log=lambda m: None)


@pytest.fixture(scope="module")
def client(bundle):
    server = serve("--bundle", str(bundle))
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    assert server.stop() in (0, -signal.SIGTERM)


def _ids(completion) -> list[str]:
    return [i["id"] for i in completion.model_extra["recommendation"]["items"]]


def test_three_turn_conversation_with_the_openai_client(client):
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": "I loved The Godfahter and Goodfelas, recommend me 3 movies"}]
    first = client.chat.completions.create(model=model, messages=messages)
    text = first.choices[0].message.content
    ids = _ids(first)
    assert len(ids) == 3 and not {"858", "1213"} & set(ids)  # never the mentioned titles
    assert "1." in text and re.search(r"\d+% match", text)  # a readable list with probabilities
    items = first.model_extra["recommendation"]["items"]
    assert all(i["reason"] and i["evidence"] for i in items)  # reasons grounded in the bundle's evidence
    assert "\nWhy:\n1. " in text and items[0]["reason"] in text

    messages += [{"role": "assistant", "content": text},
                 {"role": "user", "content": "I've already seen the first one. Something older, not a comedy?"}]
    second = client.chat.completions.create(model=model, messages=messages)
    ids2 = _ids(second)
    assert ids2 and ids[0] not in ids2
    years = [int(m) for m in re.findall(r"\((\d{4})\)", " ".join(i["title"] for i in
                                                                  second.model_extra["recommendation"]["items"]))]
    assert years and all(y < 2000 for y in years), years

    messages += [{"role": "assistant", "content": second.choices[0].message.content},
                 {"role": "user", "content": "more like the second one"}]
    stream = client.chat.completions.create(model=model, messages=messages, stream=True)
    chunks = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    streamed = "".join(chunks)
    assert "1." in streamed and streamed.strip()
    # the ranked list first, the reasons after it, in later chunks
    last_item = max(n for n, c in enumerate(chunks) if "% match" in c)
    why = next(n for n, c in enumerate(chunks) if "Why:" in c)
    assert why > last_item


def test_off_topic_and_json_requests_still_work(client, sample_request):
    import json

    model = client.models.list().data[0].id
    off = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "what's the weather?"}])
    assert off.model_extra.get("recommendation") is None and off.choices[0].message.content
    as_json = client.chat.completions.create(model=model, messages=[{"role": "user", "content": json.dumps(sample_request)}])
    assert json.loads(as_json.choices[0].message.content)["items"]
