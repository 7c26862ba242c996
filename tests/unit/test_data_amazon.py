"""Amazon Beauty (P5 sequences + RecBole item file) on small files and on the shared copy."""

from __future__ import annotations

import json

import pytest

from llm_recommender.data import DataFileError, load_dataset
from tests.shared_data import shared_data_dir


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))


def write_beauty(root, sequences="1 1 2 3\n2 3 1\n"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text(sequences)
    maps = {"id2item": {"1": "B001", "2": "B002", "3": "B003"}, "id2user": {"1": "AUSER1", "2": "AUSER2"}}
    (root / "datamaps.json").write_text(json.dumps(maps))
    (root / "Amazon_Beauty.item").write_text(
        "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token\n"
        "B001\tLip Balm\tBeauty\t10.0\t'Beauty', 'Skin Care'\t3.5\tAcme\n"
        'B002\tPerfume\tBeauty\t5.0\t"\'Beauty\', ""Women\'s"""\t\t\n'
        "B003\t\tBeauty\t1.0\t\t\t\n",
        encoding="utf-8",
    )
    return root


def test_small_beauty(tmp_path):
    ds = load_dataset("amazon-beauty", write_beauty(tmp_path / "beauty"))
    assert ds.time_kind == "order" and not ds.has_ratings
    assert [(x.item_id, x.timestamp) for x in ds.sequences["AUSER1"]] == [("B001", 0), ("B002", 1), ("B003", 2)]
    assert [x.item_id for x in ds.sequences["AUSER2"]] == ["B003", "B001"]
    assert ds.item("B001").attributes == {"categories": ["Beauty", "Skin Care"], "brand": "Acme", "price": 3.5}
    assert ds.item("B002").attributes == {"categories": ["Beauty", "Women's"]}
    assert ds.item("B003").title == "B003"  # no title in the metadata: the ASIN stands in
    assert ds.info["items_without_title"] == 1


def test_unknown_item_id_names_line(tmp_path):
    root = write_beauty(tmp_path / "beauty", sequences="1 1 2\n2 9\n")
    with pytest.raises(DataFileError, match=r"sequential_data.txt, line 2: item id 9 is not in datamaps.json"):
        load_dataset("amazon-beauty", root)


def test_needs_data_dir_and_files(tmp_path):
    with pytest.raises(DataFileError, match="needs data_dir"):
        load_dataset("amazon-beauty")
    root = write_beauty(tmp_path / "beauty")
    (root / "datamaps.json").unlink()
    with pytest.raises(DataFileError, match=r"datamaps.json: file not found"):
        load_dataset("amazon-beauty", root)


def test_shared_beauty():
    root = shared_data_dir("amazon-beauty-2014-5core", "sequential_data.txt")
    ds = load_dataset("amazon-beauty", root, cache=False)
    assert (ds.n_users, len(ds.items), len(ds.interactions)) == (22_363, 12_101, 198_502)
    assert ds.info["items_without_title"] == 7
    assert min(len(s) for s in ds.sequences.values()) >= 5
