"""A history entry whose id the bundle's catalogue knows needs no title: the recommender takes it from the
catalogue. An id it does not know, or no bundle at all, still needs a title, and the error names the field."""

from __future__ import annotations

import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.batch import BatchConfig, RecommenderSpec, read_output, run_batch
from llm_recommender.bundle import FitConfig, fit_bundle
from llm_recommender.errors import InvalidRequestError
from llm_recommender.protocol import parse_request
from tests.batch_helpers import write_jsonl
from tests.synthetic import hash_encoder, write_generic_dataset


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("titles")
    cfg = FitConfig(dataset="generic", data_dir=write_generic_dataset(root / "data"),
                    components=["popularity", "cooccurrence"], valid_users=20, min_gain=-1.0)
    return fit_bundle(cfg, root / "bundle", text_encoder=hash_encoder, log=lambda m: None)


@pytest.fixture(scope="module")
def rec(bundle_dir):
    return Recommender.load(bundle_dir)


def test_known_ids_need_no_title_on_every_python_door(rec):
    items = rec.bundle.space.items
    titled = [{"id": it.id, "title": it.title} for it in items[:3]]
    bare = [{"id": it.id} for it in items[:3]]
    candidates = [{"id": it.id, "title": it.title} for it in items[5:12]]
    want = rec.rank(history=titled, candidates=candidates, top_k=5)
    got = rec.rank(history=bare, candidates=candidates, top_k=5)
    assert [i.id for i in got.items] == [i.id for i in want.items]
    assert [i.probability for i in got.items] == [i.probability for i in want.items]
    retrieved = rec.rank_request({"history": bare, "top_k": 3})  # the catalogue supplies candidates too
    assert len(retrieved.items) == 3 and not {i.id for i in retrieved.items} & {h["id"] for h in bare}


def test_an_unknown_id_without_a_title_names_the_field(rec):
    known = rec.bundle.space.items[0].id
    with pytest.raises(InvalidRequestError) as err:
        rec.rank_request({"history": [{"id": known}, {"id": "no-such-item"}], "top_k": 3})
    assert err.value.param == "history[1].title" and "'no-such-item'" in err.value.message


def test_without_a_bundle_a_title_is_still_needed():
    rec = Recommender(backend=FakeBackend())
    with pytest.raises(InvalidRequestError) as err:
        rec.rank(history=[{"id": "1"}], candidates=[{"id": "2", "title": "Aliens"}])
    assert err.value.param == "history[0].title" and "without a bundle" in err.value.message
    with pytest.raises(InvalidRequestError, match="must not be blank"):  # a given blank title stays an error
        parse_request({"history": [{"id": "1", "title": " "}], "candidates": [{"id": "2", "title": "x"}]})


def test_batch_rows_with_known_ids_need_no_title(bundle_dir, rec, tmp_path):
    ids = [it.id for it in rec.bundle.space.items]
    write_jsonl(tmp_path / "users.jsonl", [{"user_id": "a", "history": [{"id": ids[0]}, {"id": ids[1]}]},
                                           {"user_id": "b", "history": [{"id": "nope"}]}])
    run_batch(BatchConfig(input=tmp_path / "users.jsonl", output=tmp_path / "out", use_ray=False, progress=False,
                          top_k=3), RecommenderSpec(bundle=bundle_dir))
    rows = {r["user_id"]: r for r in read_output(tmp_path / "out")}
    assert rows["a"]["error"] is None and len(rows["a"]["items"]) == 3
    assert rows["b"]["error"]["param"] == "history[0].title"


def test_the_http_door_takes_known_ids_without_titles(rec):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from llm_recommender.server import ServerSettings, create_app

    known = rec.bundle.space.items[0].id
    with TestClient(create_app(rec, ServerSettings())) as client:
        ok = client.post("/v1/recommendations", json={"history": [{"id": known}], "top_k": 3})
        bad = client.post("/v1/recommendations", json={"history": [{"id": "nope"}], "top_k": 3})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3, ok.text
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "history[0].title", bad.text
