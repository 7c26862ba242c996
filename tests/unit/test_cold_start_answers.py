"""A user the recommender knows nothing about: an empty history, or one made only of items the
catalogue does not know. Every door (Python, CLI, HTTP JSON, chat sentences) answers with the
catalogue's most popular items, says so (``basis="popularity"``, the reason, a note), and never
claims a history it does not have. History titles the catalogue knows under another id are linked;
made-up titles are not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.bundle import FitConfig, fit_bundle
from llm_recommender.protocol import RankRequest
from llm_recommender.scorers.item_space import ItemSpace
from tests.agent_fixtures import write_genre_viewers

pytest.importorskip("rapidfuzz")

UNKNOWN = [{"id": "x1", "title": "Zzyzx Quorble 3000"}, {"id": "x2", "title": "The Purple Llama Conspiracy"}]
FALSE_CLAIMS = ("most recently", "Because you", "you watched", "you rated", "histories like yours")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """The tiny catalogue (Alien, Heat, ...) with generated viewers whose taste follows a genre."""
    root = tmp_path_factory.mktemp("cold")
    write_genre_viewers(root, rating=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLM_REC_CACHE_DIR", str(root / "cache"))
        cfg = FitConfig(dataset="generic", data_dir=root, components=["popularity", "cooccurrence"], valid_users=30,
                        min_gain=-1.0)
        return fit_bundle(cfg, root / "bundle", log=lambda m: None)


@pytest.fixture(scope="module")
def rec(bundle_dir):
    return Recommender.load(bundle_dir)


def by_popularity(rec, ids=None):
    """Catalogue ids, most popular first (ties: catalogue order), from the counts the bundle stores."""
    counts = rec.bundle.components["popularity"].counts
    order = [rec.bundle.space.items[i].id for i in np.argsort(-counts, kind="stable")]
    return order if ids is None else [i for i in order if i in set(ids)]


def share(rec, item_id):
    counts = rec.bundle.components["popularity"].counts
    return counts[rec.bundle.space.index[item_id]] / rec.bundle.manifest.dataset["users"]


def assert_cold_start(rec, response, expected_ids, reasons=True):
    response = response if isinstance(response, dict) else response.model_dump(mode="json")
    assert response["basis"] == "popularity" and response["strategy"] == "popularity"
    assert [it["id"] for it in response["items"]] == expected_ids
    assert response["items"][0]["probability"] > response["items"][-1]["probability"]
    counts, users = rec.bundle.components["popularity"].counts, rec.bundle.manifest.dataset["users"]
    for it in response["items"]:
        assert it["probability"] == pytest.approx(share(rec, it["id"]))  # the share of users who chose it
        if reasons:
            rank = by_popularity(rec).index(it["id"]) + 1
            count = int(counts[rec.bundle.space.index[it["id"]]])
            opening = "Popular with everyone" if rank <= 3 else "Ranked by popularity alone"
            assert it["reason"] == (f"{opening}: #{rank} of 20 in this catalogue, chosen by {count} of {users} users. "
                                    "Tell me a few things you like.")
    assert any(n.startswith("cold start:") for n in response["notes"])
    assert not any(claim in json.dumps(response) for claim in FALSE_CLAIMS)


# ---- Python ------------------------------------------------------------------------------------


def test_empty_history_gets_the_most_popular_items(rec):
    assert_cold_start(rec, rec.rank(history=[], top_k=3, reasons=True), by_popularity(rec)[:3])
    assert_cold_start(rec, rec.rank_request({"history": [], "top_k": 4, "reasons": True}), by_popularity(rec)[:4])


def test_the_cold_start_answer_takes_its_reasons_through_the_one_reason_path(rec, monkeypatch):
    import llm_recommender.recommender as recommender

    seen = []
    real = recommender.explain_ranking

    def spy(rec_, request, result, order, probabilities):
        seen.append(result.details.get("reasons") is not None)
        return real(rec_, request, result, order, probabilities)

    monkeypatch.setattr(recommender, "explain_ranking", spy)
    assert_cold_start(rec, rec.rank(history=[], top_k=3, reasons=True), by_popularity(rec)[:3])
    assert seen == [True]  # explain_ranking worded it (from the ranking's own reasons), once


def test_empty_history_ranks_the_given_candidates_by_popularity(rec):
    cands = [it for it in rec.bundle.space.items if it.id in {"1", "7", "13", "19"}]
    resp = rec.rank(history=[], candidates=[c.model_dump() for c in cands], top_k=4, reasons=True)
    assert_cold_start(rec, resp, by_popularity(rec, ["1", "7", "13", "19"]))


def test_a_history_the_catalogue_does_not_know_is_a_cold_start(rec):
    resp = rec.rank(history=UNKNOWN, top_k=3, reasons=True)
    assert_cold_start(rec, resp, by_popularity(rec)[:3])
    assert resp.history_total == 2 and resp.history_used == 0
    named = " ".join(resp.notes)
    assert "'x1'" in named and "Zzyzx Quorble 3000" in named and "'x2'" in named


def test_rank_pool_with_no_history_takes_the_pools_most_popular(rec):
    pool = [it for it in rec.bundle.space.items if it.id in {"2", "3", "9", "14", "16"}]
    resp = rec.rank_pool([], pool, 3, reasons=True)
    assert_cold_start(rec, resp, by_popularity(rec, [p.id for p in pool])[:3])


def test_unknown_history_ids_are_linked_by_title_and_the_rest_named(rec):
    resp = rec.rank(history=[{"id": "x9", "title": "The Shining", "rating": 4.0, "timestamp": 7}, UNKNOWN[0]], top_k=3)
    assert resp.basis == "history" and resp.history_used == 1
    linked = next(n for n in resp.notes if n.startswith("linked 1 history item"))
    assert "'x9'" in linked and "'Shining, The (1980)' (id '20')" in linked
    assert any("'x1'" in n and "Zzyzx Quorble 3000" in n for n in resp.notes if not n.startswith("linked"))
    # ranked exactly as if the user had sent the catalogue's id (the rating and timestamp are kept)
    same = rec.rank(history=[{"id": "20", "title": "Shining, The (1980)", "rating": 4.0, "timestamp": 7}, UNKNOWN[0]],
                    top_k=3)
    assert [(i.id, i.probability) for i in resp.items] == [(i.id, i.probability) for i in same.items]
    assert "20" not in [i.id for i in resp.items]  # the linked item is history, not a recommendation


def test_an_ambiguous_title_is_not_guessed(rec):
    resp = rec.rank(history=[{"id": "x3", "title": "Hamlet"}], top_k=2)
    assert resp.basis == "popularity"
    assert any("'x3'" in n and "several titles match" in n for n in resp.notes)


def test_made_up_titles_do_not_link_to_a_real_catalogue_and_typos_do():
    from llm_recommender.coldstart import ColdStart
    from llm_recommender.data import load_dataset
    from llm_recommender.protocol import RankRequest

    ds = load_dataset("ml-latest-small")
    bundle = SimpleNamespace(space=ItemSpace([ds.item(i) for i in ds.item_ids]), components={},
                             manifest=SimpleNamespace(dataset={}))
    cold = ColdStart(bundle)

    def linked(title):
        res = cold.resolve(RankRequest(history=[{"id": "nope", "title": title}]))
        return res.request.history[0].title if res.known else None

    for made_up in ("Zzyzx Quorble 3000", "The Purple Llama Conspiracy", "Attack of the Killer Spreadsheets", "Qwertyuiop",
                     "Toy Story 7"):
        assert linked(made_up) is None, made_up
    assert linked("Shawshank Redemtion") == "Shawshank Redemption, The (1994)"
    assert linked("The Godfather (1972)") == "Godfather, The (1972)"


def test_without_a_bundle_an_empty_history_says_it_has_no_user_signal(sample_request):
    resp = Recommender(backend="fake").rank(history=[], candidates=sample_request["candidates"], top_k=2)
    assert resp.basis == "none" and any("no user signal" in n for n in resp.notes)
    assert Recommender(backend="fake").rank(**{k: sample_request[k] for k in ("history", "candidates")}).basis == "history"


# ---- CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [[], UNKNOWN])
def test_cli_rank_answers_by_popularity(rec, bundle_dir, history):
    request = json.dumps({"history": history, "top_k": 3, "reasons": True}).encode()
    cli = [sys.executable, "-m", "llm_recommender.cli", "rank", "-", "--bundle", str(bundle_dir)]
    out = subprocess.run(cli, input=request, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert_cold_start(rec, json.loads(out.stdout), by_popularity(rec)[:3])
    table = subprocess.run([*cli, "--table"], input=request, capture_output=True, timeout=120)
    lines = table.stdout.decode().splitlines()
    assert lines[0] == "basis: popularity"
    assert lines[1].startswith("  1. ") and "Popular with everyone: #1" in lines[2]
    assert "note: cold start:" in table.stderr.decode()


# ---- HTTP --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(rec):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llm_recommender.server import ServerSettings, create_app

    # loaded as `llm-rec serve --bundle` loads it, so the chat agent gets the bundle's catalogue
    with TestClient(create_app(lambda: rec, ServerSettings(served_model_name="cold"))) as c:
        deadline = time.monotonic() + 60
        while c.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield c


@pytest.mark.parametrize("history", [[], UNKNOWN])
def test_http_recommendations_and_json_chat_answer_by_popularity(rec, client, history):
    request = {"history": history, "top_k": 3, "reasons": True}
    r = client.post("/v1/recommendations", json=request)
    assert r.status_code == 200, r.text
    assert_cold_start(rec, r.json(), by_popularity(rec)[:3])
    r = client.post("/v1/chat/completions", json={"model": "cold", "messages": [
        {"role": "user", "content": json.dumps(request)}]})
    assert r.status_code == 200, r.text
    assert_cold_start(rec, json.loads(r.json()["choices"][0]["message"]["content"]), by_popularity(rec)[:3])


@pytest.mark.parametrize("sentence, opening", [
    ("recommend me something", "You have not told me anything you like yet, so here is what is most popular"),
    ("I have never watched anything", "You have not told me anything you like yet, so here is what is most popular"),
    ("I loved Zzyzx Quorble 3000, what should I watch?", 'I could not find "Zzyzx Quorble 3000" in the catalogue, '
                                                          "so here is what is most popular"),
])
def test_chat_sentences_answer_by_popularity_and_say_so(rec, client, sentence, opening):
    from llm_recommender.agent.answer import safe_title

    r = client.post("/v1/chat/completions", json={"model": "cold", "messages": [{"role": "user", "content": sentence}]})
    assert r.status_code == 200, r.text
    body = r.json()
    text = body["choices"][0]["message"]["content"]
    assert text.startswith(opening)
    assert_cold_start(rec, body["recommendation"], by_popularity(rec)[:5])
    top = body["recommendation"]["items"][0]
    assert f"\n1. {safe_title(top['title'])} — {top['probability']:.0%} of users\n" in text
    assert "% match" not in text and not any(claim in text for claim in FALSE_CLAIMS)


def test_streamed_chat_sends_the_same_popularity_answer(client):
    body = {"model": "cold", "messages": [{"role": "user", "content": "recommend me something"}]}
    plain = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    r = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert r.status_code == 200, r.text
    events = [line[len("data: "):] for line in r.text.split("\n") if line.startswith("data: ")][:-1]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in map(json.loads, events) if c["choices"])
    assert streamed == plain and "\nWhy:\n1. Popular with everyone: #1" in streamed


def test_a_linked_history_entry_keeps_what_the_user_said(rec):
    """Linking by title replaces the id and title only: a like the user stated (no rating) stays stated, so
    no reason can turn it into a rating or a viewing."""
    resolved = rec.cold_start.resolve(RankRequest(history=[{"id": "x9", "title": "The Shining", "stated": True}]))
    entry = resolved.request.history[0]
    assert (entry.id, entry.stated, entry.rating) == ("20", True, None)
