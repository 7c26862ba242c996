"""The generic CSV/JSONL loader: bring-your-own interactions and items."""

from __future__ import annotations

import json

import pytest

from llm_recommender.data import DataFileError, load_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_csv_with_timestamps_and_ratings(tmp_path):
    (tmp_path / "items.csv").write_text(
        'item_id,title,text,genres\na,"Alpha, the book",A long story,Fiction|Classic\nb,Beta,,\n', encoding="utf-8"
    )
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp,rating\nu1,b,20,4\nu1,a,10,\nu2,a,2024-01-01T00:00:00Z,5\n", encoding="utf-8"
    )
    ds = load_dataset("generic", tmp_path)
    assert ds.time_kind == "unix" and len(ds.interactions) == 3
    assert [x.item_id for x in ds.sequences["u1"]] == ["a", "b"]
    assert ds.sequences["u1"][0].rating is None and ds.sequences["u1"][1].rating == 4.0
    assert ds.sequences["u2"][0].timestamp == 1704067200
    item = ds.item("a")
    assert (item.title, item.description, item.attributes) == (
        "Alpha, the book",
        "A long story",
        {"genres": ["Fiction", "Classic"]},
    )
    assert ds.item("b").description is None and ds.item("b").attributes is None


def test_jsonl_without_timestamps_uses_file_order(tmp_path):
    _jsonl(tmp_path / "items.jsonl", [{"item_id": 1, "title": "One", "genres": ["x"]}, {"item_id": 2, "title": "Two"}])
    _jsonl(
        tmp_path / "interactions.jsonl",
        [{"user_id": 7, "item_id": 2}, {"user_id": 7, "item_id": 1}, {"user_id": 8, "item_id": 1}],
    )
    ds = load_dataset("generic", tmp_path)
    assert ds.time_kind == "order" and not ds.has_ratings
    assert [(x.item_id, x.timestamp) for x in ds.sequences["7"]] == [("2", 0), ("1", 1)]
    assert ds.item("1").attributes == {"genres": ["x"]}


def test_explicit_paths(tmp_path):
    _jsonl(tmp_path / "cat.jsonl", [{"item_id": "i", "title": "I"}])
    (tmp_path / "log.csv").write_text("user_id,item_id\nu,i\n")
    ds = load_dataset("generic", interactions=tmp_path / "log.csv", items=tmp_path / "cat.jsonl")
    assert len(ds.interactions) == 1


@pytest.mark.parametrize(
    ("items", "inter", "pattern"),
    [
        (
            [{"item_id": 1, "title": "One"}],
            [{"user_id": 1, "item_id": 1}, {"user_id": 1, "item_id": 3}],
            r"interactions.jsonl, line 2: item_id '3' is not in items.jsonl",
        ),
        (
            [{"item_id": 1, "title": "One"}, {"item_id": 1, "title": "Again"}],
            [{"user_id": 1, "item_id": 1}],
            r"items.jsonl, line 2: duplicate item_id '1'",
        ),
        ([{"item_id": 1}], [{"user_id": 1, "item_id": 1}], r"items.jsonl, line 1: missing field\(s\) title"),
        (
            [{"item_id": 1, "title": "One"}],
            [{"user_id": 1, "item_id": 1, "timestamp": 5}, {"user_id": 1, "item_id": 1}],
            r"line 2: timestamp must be given on every row or on none",
        ),
        (
            [{"item_id": 1, "title": "One"}],
            [{"user_id": 1, "item_id": 1, "timestamp": "yesterday"}],
            r"line 1: timestamp must be unix seconds or an ISO-8601 date",
        ),
        (
            [{"item_id": 1, "title": "One"}],
            [{"user_id": 1, "item_id": 1, "rating": "great"}],
            r"line 1: rating must be a number",
        ),
    ],
)
def test_errors_name_file_and_line(tmp_path, items, inter, pattern):
    _jsonl(tmp_path / "items.jsonl", items)
    _jsonl(tmp_path / "interactions.jsonl", inter)
    with pytest.raises(DataFileError, match=pattern):
        load_dataset("generic", tmp_path)


def test_invalid_json_line(tmp_path):
    _jsonl(tmp_path / "items.jsonl", [{"item_id": 1, "title": "One"}])
    (tmp_path / "interactions.jsonl").write_text('{"user_id": 1, "item_id": 1}\n\n{"user_id": 1,\n')
    with pytest.raises(DataFileError, match=r"interactions.jsonl, line 3: invalid JSON"):
        load_dataset("generic", tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(
        DataFileError, match=r"interactions.csv: file not found \(expected interactions.csv or interactions.jsonl"
    ):
        load_dataset("generic", tmp_path)
    with pytest.raises(DataFileError, match="needs data_dir"):
        load_dataset("generic")


def test_filtered_tables_are_respected(tmp_path):
    import dataclasses

    _jsonl(tmp_path / "items.jsonl", [{"item_id": 1, "title": "One"}, {"item_id": 2, "title": "Two"}])
    _jsonl(tmp_path / "interactions.jsonl", [{"user_id": 1, "item_id": 1}, {"user_id": 2, "item_id": 2}])
    ds = load_dataset("generic", tmp_path)
    only_two = dataclasses.replace(ds, interactions=ds.interactions.filter(lambda r: r["user_id"] == "2"))
    assert list(only_two.sequences) == ["2"] and only_two.sequences["2"][0].item_id == "2"
