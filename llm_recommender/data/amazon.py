"""Amazon Beauty 5-core (McAuley 2014) in the P5 processed form.

Files (``data_dir``): ``sequential_data.txt`` (``user item item ...`` per line, integer P5
ids, items in time order), ``datamaps.json`` (``id2item`` -> ASIN, ``id2user`` -> reviewer
id) and ``Amazon_Beauty.item`` (RecBole atomic file, tab-separated, keyed by ASIN: title,
categories, brand, price...). There are no timestamps or ratings: ``timestamp`` is the
0-based position in the user's sequence (``time_kind == "order"``) and ``rating`` is null.
Ids in the tables are the original ASINs and reviewer ids. The few items without a title
use their ASIN as the title.
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from typing import Any

from .base import (
    DataFileError,
    RecDataset,
    Tables,
    cached_build,
    parse_float,
    read_lines,
    register_loader,
    require_file,
)
from .words import PRODUCT

SEQUENCES = "sequential_data.txt"
DATAMAPS = "datamaps.json"
ITEM_FILE = "Amazon_Beauty.item"


def _parse_categories(raw: str) -> list[str]:
    # RecBole token_seq written as a Python list body: 'Beauty', 'Fragrance', "Women's"
    if not raw.strip():
        return []
    try:
        val = ast.literal_eval(f"[{raw}]")
        if isinstance(val, list) and all(isinstance(v, str) for v in val):
            return val
    except (ValueError, SyntaxError):
        pass
    return [p.strip().strip("'\"") for p in raw.split(",") if p.strip()]


def _parse_items(path: Path) -> dict[str, dict[str, Any]]:
    require_file(path)
    out: dict[str, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        try:
            header = [h.split(":", 1)[0] for h in next(reader)]
        except StopIteration:
            raise DataFileError(path, "empty file (expected a RecBole header row)", line=1) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataFileError(path, f"unreadable header: {exc}", line=1) from None
        if "item_id" not in header or "title" not in header:
            raise DataFileError(path, f"header must have item_id:token and title:token, found {header}", line=1)
        start = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataFileError(path, f"malformed row: {exc}", line=start + 1) from None
            line = start + 1
            start = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataFileError(path, f"expected {len(header)} tab-separated fields, got {len(row)}", line=line)
            rec = dict(zip(header, row))
            price = rec.get("price", "").strip()
            out[rec["item_id"]] = {
                "title": rec["title"].strip() or None,
                "categories": _parse_categories(rec.get("categories", "")),
                "brand": rec.get("brand", "").strip() or None,
                "price": parse_float(path, line, "price", price) if price else None,
            }
    return out


def _parse_beauty(root: Path) -> Tables:
    maps_path = require_file(root / DATAMAPS)
    try:
        maps = json.loads(maps_path.read_text(encoding="utf-8"))
        id2item: dict[str, str] = maps["id2item"]
        id2user: dict[str, str] = maps.get("id2user", {})
    except json.JSONDecodeError as exc:
        raise DataFileError(maps_path, f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    except (KeyError, TypeError):
        raise DataFileError(maps_path, "expected a JSON object with an 'id2item' map") from None

    meta = _parse_items(root / ITEM_FILE)
    seq_path = root / SEQUENCES
    inter: dict[str, list[Any]] = {"user_id": [], "item_id": [], "timestamp": [], "rating": []}
    used: dict[str, None] = {}
    for n, line in read_lines(seq_path, "utf-8"):
        parts = line.split()
        if len(parts) < 2:
            raise DataFileError(seq_path, "expected 'user_id item_id [item_id ...]'", line=n)
        user = id2user.get(parts[0], parts[0])
        for pos, pid in enumerate(parts[1:]):
            asin = id2item.get(pid)
            if asin is None:
                raise DataFileError(seq_path, f"item id {pid} is not in {DATAMAPS} id2item", line=n)
            inter["user_id"].append(user)
            inter["item_id"].append(asin)
            inter["timestamp"].append(pos)
            inter["rating"].append(None)
            used[asin] = None

    items: dict[str, list[Any]] = {k: [] for k in ("item_id", "title", "text", "categories", "brand", "price")}
    untitled = 0
    # The catalogue is every item in the id map (P5 id order), titled from the RecBole file.
    for asin in dict.fromkeys([*id2item.values(), *used]):
        m = meta.get(asin, {})
        untitled += m.get("title") is None
        items["item_id"].append(asin)
        items["title"].append(m.get("title") or asin)
        items["text"].append(None)
        items["categories"].append(m.get("categories", []))
        items["brand"].append(m.get("brand"))
        items["price"].append(m.get("price"))
    info = {"format": "amazon-beauty-p5", "items_without_title": untitled}
    return Tables(inter, items, "order", ("categories", "brand", "price"), info)


@register_loader("amazon-beauty", words=PRODUCT)
def load_amazon_beauty(data_dir: str | Path | None = None, *, cache: bool = True) -> RecDataset:
    """Amazon Beauty 5-core (P5 sequences + RecBole item metadata); ``data_dir`` is required."""
    if data_dir is None:
        raise DataFileError(
            SEQUENCES, f"amazon-beauty needs data_dir (a folder with {SEQUENCES}, {DATAMAPS}, {ITEM_FILE})"
        )
    root = Path(data_dir).expanduser()
    files = [root / SEQUENCES, root / DATAMAPS, root / ITEM_FILE]
    return cached_build("amazon-beauty", files, lambda: _parse_beauty(root), source=str(root), cache=cache, options={})
