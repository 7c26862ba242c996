"""MovieLens loaders: 100K (``u.data``/``u.item``/``u.genre``), 1M (``*.dat``, ``::``-separated,
latin-1) and latest-small (CSV, bundled with the package).

``data_dir`` may be the folder holding the files or its parent (``DIR/ml-100k/u.data``).
With ``download=True`` and no files, the official GroupLens archive is fetched (short
timeout) and checked against its published MD5 before anything is extracted.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from ..sample_data import ML_LATEST_SMALL
from .base import (
    DataFileError,
    DatasetDownloadError,
    RecDataset,
    Tables,
    cache_root,
    cached_build,
    parse_float,
    parse_int,
    read_lines,
    register_loader,
    require_file,
)
from .words import MOVIE

# Official archives and the MD5s GroupLens publishes beside them (``<archive>.md5``).
ARCHIVES: dict[str, tuple[str, str]] = {
    "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
}
DOWNLOAD_TIMEOUT_S = 10.0

_ARTICLE = re.compile(r"^(?P<name>.*), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)(?P<rest> \(.*\))?$")


def natural_title(title: str) -> str:
    """``"Matrix, The (1999)"`` -> ``"The Matrix (1999)"`` (MovieLens files move articles to the end)."""
    m = _ARTICLE.match(title)
    if not m:
        return title
    sep = "" if m["article"].endswith("'") else " "
    return f"{m['article']}{sep}{m['name']}{m['rest'] or ''}"


def _resolve_dir(name: str, data_dir: str | Path | None, marker: str, download: bool) -> Path:
    """The folder holding ``marker``: ``data_dir`` itself or ``data_dir/name``; download if allowed."""
    base = Path(data_dir).expanduser() if data_dir is not None else cache_root() / "downloads"
    for cand in (base, base / name):
        if (cand / marker).is_file():
            return cand
    if download:
        return download_archive(name, base)
    if data_dir is None:
        raise DataFileError(
            base / name / marker,
            f"no {name} files: pass data_dir=<folder with {marker}> (CLI: --data-dir) or download=True",
        )
    raise DataFileError(
        base / marker, f"file not found (expected the official {name} files in {base} or {base / name})"
    )


def download_archive(name: str, dest: Path, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch and verify the official archive, extract it under ``dest``; return the data folder."""
    url, md5 = ARCHIVES[name]
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / f"{name}.zip"
    part = archive.with_suffix(".zip.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            shutil.copyfileobj(resp, fh)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DatasetDownloadError(
            f"could not download {name} from {url} ({reason}); this machine may be offline: "
            f"download {url} yourself, unzip it and pass its folder as data_dir",
            param="data_dir",
        ) from None
    got = hashlib.md5(part.read_bytes()).hexdigest()
    if got != md5:
        part.unlink(missing_ok=True)
        raise DatasetDownloadError(
            f"checksum mismatch for {url}: md5 {got}, expected {md5}; refusing to use it", param="data_dir"
        )
    part.rename(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise DatasetDownloadError(f"{archive} is not a valid zip archive: {exc}", param="data_dir") from None
    return dest / name


# ---- MovieLens 100K ---------------------------------------------------------------------


def _parse_ml100k(root: Path, natural: bool) -> Tables:
    genre_path = root / "u.genre"
    genres: dict[int, str] = {}
    for n, line in read_lines(genre_path, "latin-1"):
        name, sep, idx = line.rpartition("|")
        if not sep or not name:
            raise DataFileError(genre_path, f"expected 'name|index', got {line!r}", line=n)
        genres[parse_int(genre_path, n, "genre index", idx)] = name
    flags = [genres.get(i) for i in range(len(genres))]
    if None in flags:
        raise DataFileError(genre_path, f"genre indices must be 0..{len(genres) - 1}")

    item_path = root / "u.item"
    items: dict[str, list[Any]] = {"item_id": [], "title": [], "text": [], "genres": [], "release_date": []}
    seen: set[str] = set()
    n_fields = 5 + len(flags)
    for n, line in read_lines(item_path, "latin-1"):
        parts = line.split("|")
        if len(parts) != n_fields:
            raise DataFileError(item_path, f"expected {n_fields} '|'-separated fields, got {len(parts)}", line=n)
        iid = str(parse_int(item_path, n, "movie id", parts[0]))
        if iid in seen:
            raise DataFileError(item_path, f"duplicate movie id {iid}", line=n)
        seen.add(iid)
        bits = parts[5:]
        if any(b not in ("0", "1") for b in bits):
            raise DataFileError(item_path, "genre flags must be 0 or 1", line=n)
        title = parts[1].strip() or iid
        items["item_id"].append(iid)
        items["title"].append(natural_title(title) if natural else title)
        items["text"].append(None)
        items["genres"].append([g for g, b in zip(flags, bits) if b == "1" and g != "unknown"])
        items["release_date"].append(parts[2] or None)

    data_path = root / "u.data"
    inter: dict[str, list[Any]] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    for n, line in read_lines(data_path, "latin-1"):
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataFileError(
                data_path, f"expected 4 tab-separated fields (user item rating timestamp), got {len(parts)}", line=n
            )
        _append(inter, data_path, n, parts, seen)
    return Tables(inter, items, "unix", ("genres",), {"format": "ml-100k"})


def _append(inter: dict[str, list[Any]], path: Path, n: int, parts: list[str], known_items: set[str]) -> None:
    user = str(parse_int(path, n, "user id", parts[0]))
    item = str(parse_int(path, n, "item id", parts[1]))
    if item not in known_items:
        raise DataFileError(path, f"item {item} is not in the item file", line=n)
    inter["user_id"].append(user)
    inter["item_id"].append(item)
    inter["rating"].append(parse_float(path, n, "rating", parts[2]))
    inter["timestamp"].append(parse_int(path, n, "timestamp", parts[3]))


@register_loader("ml-100k", words=MOVIE)
def load_ml100k(
    data_dir: str | Path | None = None, *, cache: bool = True, download: bool = False, natural_titles: bool = False
) -> RecDataset:
    """MovieLens 100K from the original GroupLens files (``u.data``, ``u.item``, ``u.genre``)."""
    root = _resolve_dir("ml-100k", data_dir, "u.data", download)
    files = [root / "u.data", root / "u.item", root / "u.genre"]
    return cached_build("ml-100k", files, lambda: _parse_ml100k(root, natural_titles), source=str(root), cache=cache,
                        options={"natural_titles": natural_titles})


# ---- MovieLens 1M -----------------------------------------------------------------------


def _dat_fields(path: Path, n: int, line: str, names: str) -> list[str]:
    """The '::'-separated fields of line ``n`` of a MovieLens 1M file; ``names`` (``A::B::C``) says how many."""
    parts = line.split("::")
    if len(parts) != names.count("::") + 1:
        raise DataFileError(path, f"expected {names.count('::') + 1} '::'-separated fields ({names}), got {len(parts)}",
                            line=n)
    return parts


def _parse_ml1m(root: Path, natural: bool) -> Tables:
    movies_path = root / "movies.dat"
    items: dict[str, list[Any]] = {"item_id": [], "title": [], "text": [], "genres": []}
    seen: set[str] = set()
    for n, line in read_lines(movies_path, "latin-1"):
        parts = line.split("::")
        if len(parts) != 3:
            raise DataFileError(
                movies_path, f"expected 3 '::'-separated fields (MovieID::Title::Genres), got {len(parts)}", line=n
            )
        iid = str(parse_int(movies_path, n, "MovieID", parts[0]))
        if iid in seen:
            raise DataFileError(movies_path, f"duplicate MovieID {iid}", line=n)
        seen.add(iid)
        title = parts[1].strip() or iid
        items["item_id"].append(iid)
        items["title"].append(natural_title(title) if natural else title)
        items["text"].append(None)
        items["genres"].append([g for g in parts[2].split("|") if g])

    users_path = root / "users.dat"
    n_users = 0
    if users_path.is_file():  # optional for loading; validated when present
        for n, line in read_lines(users_path, "latin-1"):
            parts = _dat_fields(users_path, n, line, "UserID::Gender::Age::Occupation::Zip-code")
            parse_int(users_path, n, "UserID", parts[0])
            n_users += 1

    ratings_path = root / "ratings.dat"
    inter: dict[str, list[Any]] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    for n, line in read_lines(ratings_path, "latin-1"):
        parts = _dat_fields(ratings_path, n, line, "UserID::MovieID::Rating::Timestamp")
        _append(inter, ratings_path, n, parts, seen)
    return Tables(inter, items, "unix", ("genres",), {"format": "ml-1m", "users_file_rows": n_users})


@register_loader("ml-1m", words=MOVIE)
def load_ml1m(
    data_dir: str | Path | None = None, *, cache: bool = True, download: bool = False, natural_titles: bool = False
) -> RecDataset:
    """MovieLens 1M from the original files (``ratings.dat``, ``movies.dat``, optional ``users.dat``)."""
    root = _resolve_dir("ml-1m", data_dir, "ratings.dat", download)
    files = [root / "ratings.dat", root / "movies.dat"] + (
        [root / "users.dat"] if (root / "users.dat").is_file() else []
    )
    return cached_build("ml-1m", files, lambda: _parse_ml1m(root, natural_titles), source=str(root), cache=cache,
                        options={"natural_titles": natural_titles})


# ---- MovieLens latest-small (CSV) -------------------------------------------------------


def read_csv_rows(path: Path, required: tuple[str, ...], encoding: str = "utf-8"):
    """Yield (line number, row dict) from a headed CSV, checking the header and row widths."""
    require_file(path)
    try:
        with open(path, newline="", encoding=encoding) as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise DataFileError(path, "empty file (expected a header row)", line=1) from None
            missing = [c for c in required if c not in header]
            if missing:
                raise DataFileError(
                    path, f"header lacks column(s) {', '.join(missing)}; found {', '.join(header)}", line=1
                )
            start = reader.line_num
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    start = reader.line_num
                    continue
                if len(row) != len(header):
                    raise DataFileError(
                        path, f"expected {len(header)} comma-separated fields, got {len(row)}", line=start + 1
                    )
                yield start + 1, dict(zip(header, row))
                start = reader.line_num
    except csv.Error as exc:
        raise DataFileError(path, f"malformed CSV: {exc}", line=reader.line_num) from None
    except UnicodeDecodeError as exc:
        raise DataFileError(path, f"not valid {encoding} text ({exc.reason})") from None


def _parse_latest(root: Path, natural: bool) -> Tables:
    movies_path = root / "movies.csv"
    items: dict[str, list[Any]] = {"item_id": [], "title": [], "text": [], "genres": []}
    seen: set[str] = set()
    for n, row in read_csv_rows(movies_path, ("movieId", "title", "genres")):
        iid = str(parse_int(movies_path, n, "movieId", row["movieId"]))
        if iid in seen:
            raise DataFileError(movies_path, f"duplicate movieId {iid}", line=n)
        seen.add(iid)
        title = row["title"].strip() or iid
        items["item_id"].append(iid)
        items["title"].append(natural_title(title) if natural else title)
        items["text"].append(None)
        items["genres"].append([g for g in row["genres"].split("|") if g and g != "(no genres listed)"])

    ratings_path = root / "ratings.csv"
    inter: dict[str, list[Any]] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    for n, row in read_csv_rows(ratings_path, ("userId", "movieId", "rating", "timestamp")):
        _append(inter, ratings_path, n, [row["userId"], row["movieId"], row["rating"], row["timestamp"]], seen)
    return Tables(inter, items, "unix", ("genres",), {"format": "ml-latest-small"})


@register_loader("ml-latest-small", words=MOVIE)
def load_ml_latest_small(
    data_dir: str | Path | None = None, *, cache: bool = True, natural_titles: bool = False
) -> RecDataset:
    """MovieLens latest-small (``ratings.csv``, ``movies.csv``); defaults to the copy bundled in the package."""
    root = Path(data_dir).expanduser() if data_dir is not None else ML_LATEST_SMALL
    if not (root / "ratings.csv").is_file() and (root / "ml-latest-small" / "ratings.csv").is_file():
        root = root / "ml-latest-small"
    files = [root / "ratings.csv", root / "movies.csv"]
    return cached_build("ml-latest-small", files, lambda: _parse_latest(root, natural_titles), source=str(root), cache=cache,
                        options={"natural_titles": natural_titles})
