"""Bring your own data: interactions and items as CSV or JSONL.

- interactions (``interactions.csv`` / ``interactions.jsonl`` in ``data_dir``, or a path):
  ``user_id``, ``item_id``, optional ``timestamp`` (integer unix seconds, or an ISO-8601
  date/time) and optional ``rating`` (number; blank/null allowed). Without a ``timestamp``
  column the file order is the time order (``time_kind == "order"``).
- items (``items.csv`` / ``items.jsonl``, or a path): ``item_id``, ``title``, optional
  ``text`` and optional ``genres`` (a JSON list, or ``|``-separated in CSV).

Every interaction must name an item in the items file.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .base import DataFileError, RecDataset, Tables, cached_build, parse_float, read_lines, register_loader
from .movielens import read_csv_rows


def _find(root: Path, stem: str) -> Path:
    for ext in (".csv", ".jsonl", ".json"):
        if (root / f"{stem}{ext}").is_file():
            return root / f"{stem}{ext}"
    raise DataFileError(root / f"{stem}.csv", f"file not found (expected {stem}.csv or {stem}.jsonl in {root})")


def _rows(path: Path, required: tuple[str, ...]):
    if path.suffix.lower() == ".csv":
        yield from read_csv_rows(path, required)
        return
    for n, line in read_lines(path, "utf-8"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFileError(path, f"invalid JSON: {exc.msg}", line=n) from None
        if not isinstance(row, dict):
            raise DataFileError(path, "each line must be a JSON object", line=n)
        missing = [c for c in required if c not in row or row[c] is None]
        if missing:
            raise DataFileError(path, f"missing field(s) {', '.join(missing)}", line=n)
        yield n, row


def _id(path: Path, n: int, field_name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFileError(path, f"{field_name} must be a string or integer, got {value!r}", line=n)
    out = str(value).strip()
    if not out:
        raise DataFileError(path, f"{field_name} is empty", line=n)
    return out


def _timestamp(path: Path, n: int, value: Any) -> int:
    if isinstance(value, bool):
        raise DataFileError(path, f"timestamp must be a number or ISO date, got {value!r}", line=n)
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataFileError(
            path, f"timestamp must be unix seconds or an ISO-8601 date, got {value!r}", line=n
        ) from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp())


def _parse_generic(inter_path: Path, items_path: Path) -> Tables:
    items: dict[str, list[Any]] = {"item_id": [], "title": [], "text": [], "genres": []}
    seen: set[str] = set()
    for n, row in _rows(items_path, ("item_id", "title")):
        iid = _id(items_path, n, "item_id", row["item_id"])
        if iid in seen:
            raise DataFileError(items_path, f"duplicate item_id {iid!r}", line=n)
        title = str(row["title"]).strip()
        if not title:
            raise DataFileError(items_path, f"item {iid!r} has an empty title", line=n)
        genres = row.get("genres") or []
        if isinstance(genres, str):
            genres = [g.strip() for g in genres.split("|") if g.strip()]
        if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
            raise DataFileError(items_path, "genres must be a list of strings or a '|'-separated string", line=n)
        text = row.get("text")
        seen.add(iid)
        items["item_id"].append(iid)
        items["title"].append(title)
        items["text"].append(str(text) if text not in (None, "") else None)
        items["genres"].append(genres)

    inter: dict[str, list[Any]] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    has_time: bool | None = None
    position: dict[str, int] = {}
    for n, row in _rows(inter_path, ("user_id", "item_id")):
        user = _id(inter_path, n, "user_id", row["user_id"])
        item = _id(inter_path, n, "item_id", row["item_id"])
        if item not in seen:
            raise DataFileError(inter_path, f"item_id {item!r} is not in {items_path.name}", line=n)
        ts = row.get("timestamp")
        ts = None if ts in (None, "") else ts
        if has_time is None:
            has_time = ts is not None
        elif has_time != (ts is not None):
            raise DataFileError(inter_path, "timestamp must be given on every row or on none", line=n)
        if ts is None:
            ts_val = position.get(user, 0)
            position[user] = ts_val + 1
        else:
            ts_val = _timestamp(inter_path, n, ts)
        rating = row.get("rating")
        if rating in (None, ""):
            rating_val = None
        elif isinstance(rating, (int, float)) and not isinstance(rating, bool):
            rating_val = float(rating)
        else:
            rating_val = parse_float(inter_path, n, "rating", str(rating))
        inter["user_id"].append(user)
        inter["item_id"].append(item)
        inter["timestamp"].append(ts_val)
        inter["rating"].append(rating_val)
    if not inter["user_id"]:
        raise DataFileError(inter_path, "no interactions")
    return Tables(inter, items, "unix" if has_time else "order", ("genres",), {"format": "generic"})


@register_loader("generic")
def load_generic(
    data_dir: str | Path | None = None,
    *,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    cache: bool = True,
    name: str = "generic",
) -> RecDataset:
    """Interactions + items from CSV/JSONL files (paths, or found by name in ``data_dir``)."""
    if data_dir is None and (interactions is None or items is None):
        raise DataFileError(
            "interactions.csv",
            "the generic loader needs data_dir (with interactions.csv|jsonl and items.csv|jsonl) "
            "or both interactions= and items= paths",
        )
    root = Path(data_dir).expanduser() if data_dir is not None else Path(".")
    inter_path = Path(interactions).expanduser() if interactions is not None else _find(root, "interactions")
    items_path = Path(items).expanduser() if items is not None else _find(root, "items")
    return cached_build(
        name,
        [inter_path, items_path],
        lambda: _parse_generic(inter_path, items_path),
        source=str(inter_path.parent),
        cache=cache,
        options={},
    )
