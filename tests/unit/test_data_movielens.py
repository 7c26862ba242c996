"""MovieLens loaders on small files in the official formats, the bundled latest-small, and
the shared ML-100K copy."""

from __future__ import annotations

import hashlib
import itertools
import time
import zipfile
from pathlib import Path

import pytest

from llm_recommender.data import DataFileError, DatasetDownloadError, load_dataset, movielens, natural_title
from llm_recommender.errors import InvalidRequestError, UnknownNameError
from llm_recommender.protocol import Item
from tests.shared_data import shared_data_dir

GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


def write_ml100k(root: Path, *, data_lines: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n", encoding="latin-1")
    items = [
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy|{_flags('Animation', 'Comedy')}",
        f"2|Misérables, Les (1995)|01-Jan-1995||http://x|{_flags('Drama')}",
        f"3|Usual Suspects, The (1995)|14-Aug-1995||http://x|{_flags('Crime', 'Thriller')}",
        f"4|unknown||||{_flags('unknown')}",
    ]
    (root / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    data = data_lines or ["10\t1\t5\t100", "10\t2\t3\t200", "11\t3\t4\t150", "10\t3\t2\t200", "11\t1\t1\t90"]
    (root / "u.data").write_text("\n".join(data) + "\n", encoding="latin-1")
    return root


def write_ml1m(root: Path, *, ratings: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    movies = [
        "1::Toy Story (1995)::Animation|Children's|Comedy",
        "2::Misérables, Les (1995)::Drama|Musical",
        "3::City of Lost Children, The (1995)::Adventure|Sci-Fi",
    ]
    (root / "movies.dat").write_bytes(("\n".join(movies) + "\n").encode("latin-1"))
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n", encoding="latin-1")
    ratings = ratings or ["1::1::5::978300760", "1::2::3::978302109", "2::3::4::978301968", "1::3::4::978300275"]
    (root / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    return root


def test_ml100k_small_files(tmp_path):
    ds = load_dataset("ml-100k", write_ml100k(tmp_path / "ml-100k"))
    assert ds.name == "ml-100k" and ds.time_kind == "unix"
    assert len(ds.interactions) == 5 and len(ds.items) == 4 and ds.n_users == 2
    assert ds.interactions.column_names == ["user_id", "item_id", "timestamp", "rating"]
    row = ds.interactions[0]
    assert row == {"user_id": "10", "item_id": "1", "timestamp": 100, "rating": 5.0}
    # latin-1 decoded; genre flags become names; the 'unknown' genre is dropped
    assert ds.item("2") == Item(id="2", title="Misérables, Les (1995)", attributes={"genres": ["Drama"]})
    assert ds.item("1").attributes == {"genres": ["Animation", "Comedy"]}
    assert ds.item("4").attributes is None
    # chronological per user; equal timestamps keep file order (item 2 before item 3 at t=200)
    assert [x.item_id for x in ds.sequences["10"]] == ["1", "2", "3"]
    assert [x.item_id for x in ds.sequences["11"]] == ["1", "3"]


def test_parent_folder_and_natural_titles(tmp_path):
    write_ml100k(tmp_path / "ml-100k")
    ds = load_dataset("ml-100k", tmp_path, natural_titles=True)
    assert ds.item("3").title == "The Usual Suspects (1995)"
    assert ds.item("2").title == "Les Misérables (1995)"


def test_natural_title():
    assert natural_title("Matrix, The (1999)") == "The Matrix (1999)"
    assert natural_title("American President, The") == "The American President"
    assert natural_title("Toy Story (1995)") == "Toy Story (1995)"


def test_ml1m_official_format_latin1(tmp_path):
    ds = load_dataset("ml-1m", write_ml1m(tmp_path / "ml-1m"))
    assert len(ds.interactions) == 4 and len(ds.items) == 3
    assert ds.item("2").title == "Misérables, Les (1995)"
    assert ds.item("1").attributes == {"genres": ["Animation", "Children's", "Comedy"]}
    assert [x.item_id for x in ds.sequences["1"]] == ["3", "1", "2"]  # by timestamp, not file order
    assert ds.info["users_file_rows"] == 2
    assert ds.sequences["1"][0].rating == 4.0


def test_ml1m_corrupt_line_names_file_and_line(tmp_path):
    root = write_ml1m(tmp_path / "ml-1m", ratings=["1::1::5::978300760", "1::2::3", "2::3::4::978301968"])
    with pytest.raises(DataFileError) as err:
        load_dataset("ml-1m", root)
    assert err.value.line == 2 and err.value.path.endswith("ratings.dat")
    assert "ratings.dat, line 2" in str(err.value)
    assert isinstance(err.value, InvalidRequestError) and err.value.param == "data_dir"


def test_ml1m_bad_number_and_unknown_item(tmp_path):
    root = write_ml1m(tmp_path / "a", ratings=["1::1::5::978300760", "1::2::3::978300760", "1::x::3::1"])
    with pytest.raises(DataFileError, match=r"ratings.dat, line 3: item id must be an integer"):
        load_dataset("ml-1m", root)
    root = write_ml1m(tmp_path / "b", ratings=["1::99::5::978300760"])
    with pytest.raises(DataFileError, match=r"line 1: item 99 is not in the item file"):
        load_dataset("ml-1m", root)


def test_missing_file_names_it(tmp_path):
    root = write_ml100k(tmp_path / "ml-100k")
    (root / "u.item").unlink()
    with pytest.raises(DataFileError, match=r"u.item: file not found") as err:
        load_dataset("ml-100k", root)
    assert err.value.line is None
    with pytest.raises(DataFileError, match="u.data"):
        load_dataset("ml-100k", tmp_path / "nowhere")


def test_ml100k_wrong_field_count(tmp_path):
    root = write_ml100k(tmp_path / "ml-100k", data_lines=["10\t1\t5\t100", "10 2 3 200"])
    with pytest.raises(DataFileError, match=r"u.data, line 2: expected 4 tab-separated fields"):
        load_dataset("ml-100k", root)


def test_utf8_decode_error_names_line(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    (root / "items.jsonl").write_bytes(b'{"item_id": 1, "title": "ok"}\n{"item_id": 2, "title": "caf\xe9"}\n')
    (root / "interactions.jsonl").write_text('{"user_id": 1, "item_id": 1}\n')
    with pytest.raises(DataFileError, match=r"items.jsonl, line 2: not valid utf-8"):
        load_dataset("generic", root)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownNameError) as err:
        load_dataset("ml-10m")
    for name in ("ml-100k", "ml-1m", "ml-latest-small", "amazon-beauty", "generic"):
        assert name in str(err.value)


def test_arrow_cache_reused_and_invalidated(tmp_path):
    root = write_ml100k(tmp_path / "ml-100k")
    first = load_dataset("ml-100k", root)
    entries = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    again = load_dataset("ml-100k", root)
    assert again.interactions.cache_files  # memory-mapped from the cache, not re-parsed
    assert again.interactions.to_list() == first.interactions.to_list()
    assert again.item("2") == first.item("2")
    time.sleep(0.01)
    (root / "u.data").write_text("10\t1\t5\t100\n")  # a changed file gets a new cache entry
    assert len(load_dataset("ml-100k", root).interactions) == 1
    assert len(load_dataset("ml-100k", root, cache=False).interactions) == 1


def test_download_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setitem(movielens.ARCHIVES, "ml-100k", ("http://127.0.0.1:9/ml-100k.zip", "0" * 32))
    start = time.monotonic()
    with pytest.raises(DatasetDownloadError, match="could not download ml-100k"):
        load_dataset("ml-100k", tmp_path / "dl", download=True)
    assert time.monotonic() - start < 15
    assert not list((tmp_path / "dl").glob("*.part"))


def _zip_of(folder: Path, name: str, out: Path) -> str:
    with zipfile.ZipFile(out, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"{name}/{f.name}")
    return hashlib.md5(out.read_bytes()).hexdigest()


def test_download_verifies_checksum(tmp_path, monkeypatch):
    src = write_ml1m(tmp_path / "src")
    archive = tmp_path / "ml-1m.zip"
    md5 = _zip_of(src, "ml-1m", archive)
    monkeypatch.setitem(movielens.ARCHIVES, "ml-1m", (archive.as_uri(), "f" * 32))
    with pytest.raises(DatasetDownloadError, match="checksum mismatch"):
        load_dataset("ml-1m", tmp_path / "dl", download=True)
    assert not (tmp_path / "dl" / "ml-1m").exists()
    monkeypatch.setitem(movielens.ARCHIVES, "ml-1m", (archive.as_uri(), md5))
    ds = load_dataset("ml-1m", tmp_path / "dl", download=True)
    assert len(ds.interactions) == 4 and (tmp_path / "dl" / "ml-1m" / "ratings.dat").is_file()


def test_bundled_ml_latest_small():
    ds = load_dataset("ml-latest-small", cache=False)
    assert (len(ds.interactions), len(ds.items), ds.n_users) == (100_836, 9_742, 610)
    assert ds.item("1").title == "Toy Story (1995)"
    assert ds.item("1").attributes == {"genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]}
    seq = ds.sequences["1"]
    assert all(a.timestamp <= b.timestamp for a, b in itertools.pairwise(seq))


def test_latest_small_csv_errors(tmp_path):
    root = tmp_path / "ls"
    root.mkdir()
    (root / "movies.csv").write_text('movieId,title,genres\n1,"Heat, The (1995)",Action\n2,Casino (1995)\n')
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    with pytest.raises(DataFileError, match=r"movies.csv, line 3: expected 3 comma-separated fields"):
        load_dataset("ml-latest-small", root)
    (root / "movies.csv").write_text("movieId,name\n1,x\n")
    with pytest.raises(DataFileError, match=r"movies.csv, line 1: header lacks column\(s\) title, genres"):
        load_dataset("ml-latest-small", root)


def test_shared_ml100k():
    root = shared_data_dir("ml-100k", "u.data")
    ds = load_dataset("ml-100k", root, cache=False)
    assert (len(ds.interactions), len(ds.items), ds.n_users) == (100_000, 1_682, 943)
    assert ds.item("1").title == "Toy Story (1995)"
    assert ds.item("1").attributes == {"genres": ["Animation", "Children's", "Comedy"]}
    assert min(len(s) for s in ds.sequences.values()) >= 20
    assert ds.interactions.features["timestamp"].dtype == "int64"
