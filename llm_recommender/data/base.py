"""The canonical dataset shape, the loader registry, file-error reporting and the Arrow cache.

Every source becomes two ``datasets.Dataset`` tables:

- ``interactions``: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (int64: unix seconds,
  or the 0-based position in the user's sequence when the source only has an order;
  see :attr:`RecDataset.time_kind`), ``rating`` (float64 or null), in file order;
- ``items``: ``item_id`` (str), ``title`` (str), ``text`` (str or null), ``genres`` (list of
  str) and dataset-specific columns named in :attr:`RecDataset.attribute_columns`.

The chronological order of a user's interactions is ``(timestamp, file row)``: equal
timestamps keep the order of the file (what RecBole's stable sort does), so splits never
depend on hashing or on the platform.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple

import datasets
import numpy as np
import pyarrow as pa
from datasets.table import InMemoryTable

from ..errors import InvalidRequestError, RecommenderError, UnknownNameError
from ..files import atomic_folder
from ..model_store import cache_dir
from ..protocol import HistoryEntry, Item
from .words import NEUTRAL, ItemWords

CACHE_VERSION = "1"

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating")


class DataFileError(InvalidRequestError):
    """A data file is missing, unreadable or malformed; names the file and (1-based) line."""

    code = "invalid_data_file"

    def __init__(self, path: str | Path, message: str, *, line: int | None = None, param: str = "data_dir"):
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}", param=param, path=self.path, line=line)


class DatasetDownloadError(RecommenderError):
    """Fetching an official archive failed (offline, timeout, HTTP error or checksum mismatch)."""

    status_code = 503
    code = "download_failed"


class Interaction(NamedTuple):
    """One row of a user's chronological sequence."""

    item_id: str
    timestamp: int
    rating: float | None
    row: int  # row in the interactions table (file order)


@dataclass
class RecDataset:
    """A loaded benchmark: interactions and items as Arrow-backed ``datasets.Dataset`` tables."""

    name: str
    interactions: Any  # datasets.Dataset
    items: Any  # datasets.Dataset
    time_kind: Literal["unix", "order"] = "unix"
    attribute_columns: tuple[str, ...] = ("genres",)
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    words: ItemWords = NEUTRAL  # what its items are called (set by load_dataset from the loader's registration)

    def __repr__(self) -> str:
        return (
            f"RecDataset({self.name!r}, users={self.n_users}, items={len(self.items)}, "
            f"interactions={len(self.interactions)}, time={self.time_kind})"
        )

    # ---- columns as Python/numpy values (cached; the tables are immutable) -------------

    def column(self, table: Literal["interactions", "items"], name: str) -> list[Any]:
        ds = self.interactions if table == "interactions" else self.items
        if ds._indices is not None:  # a filtered/selected view: read the rows it selects
            ds = ds.flatten_indices()
        return ds.data.column(name).to_pylist()

    @cached_property
    def has_ratings(self) -> bool:
        return any(r is not None for r in self.column("interactions", "rating"))

    @cached_property
    def n_users(self) -> int:
        return len(set(self.column("interactions", "user_id")))

    @cached_property
    def item_ids(self) -> list[str]:
        """All catalogue item ids, in item-table order."""
        return self.column("items", "item_id")

    @cached_property
    def _item_rows(self) -> dict[str, int]:
        return {iid: i for i, iid in enumerate(self.item_ids)}

    def item_row(self, item_id: str) -> dict[str, Any]:
        try:
            return self.items[self._item_rows[item_id]]
        except KeyError:
            raise InvalidRequestError(f"item {item_id!r} is not in dataset {self.name!r}", param="item_id") from None

    @cached_property
    def _protocol_items(self) -> dict[str, Item]:
        cols = {c: self.column("items", c) for c in ("item_id", "title", "text", *self.attribute_columns)}
        rows = (dict(zip(cols, vals)) for vals in zip(*cols.values()))
        return {row["item_id"]: row_to_item(row, self.attribute_columns) for row in rows}

    def item(self, item_id: str) -> Item:
        """The protocol ``Item`` for ``item_id`` (title, text as description, attributes)."""
        try:
            return self._protocol_items[item_id]
        except KeyError:
            raise InvalidRequestError(f"item {item_id!r} is not in dataset {self.name!r}", param="item_id") from None

    @cached_property
    def sequences(self) -> dict[str, list[Interaction]]:
        """user_id -> interactions in chronological order ``(timestamp, file row)``.

        Users appear in order of first appearance in the file.
        """
        users = self.column("interactions", "user_id")
        if not users:
            return {}
        codes: dict[str, int] = {}  # user codes in order of first appearance
        ucode = np.fromiter((codes.setdefault(u, len(codes)) for u in users), dtype=np.int64, count=len(users))
        ts = np.asarray(self.column("interactions", "timestamp"), dtype=np.int64)
        rows = np.arange(len(ts))
        # lexsort: last key is primary -> by user, then timestamp, then file row (a stable order)
        order = np.lexsort((rows, ts, ucode))
        items = np.asarray(self.column("interactions", "item_id"), dtype=object)[order].tolist()
        ratings = np.asarray(self.column("interactions", "rating"), dtype=object)[order].tolist()
        gc_was_on = gc.isenabled()
        gc.disable()  # a million new tuples would trigger many pointless collections
        try:
            flat = list(map(Interaction._make, zip(items, ts[order].tolist(), ratings, order.tolist())))
        finally:
            if gc_was_on:
                gc.enable()
        bounds = np.flatnonzero(np.diff(ucode[order])) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(flat)]
        return {users[int(order[a])]: flat[a:b] for a, b in zip(starts, ends)}

    def history_entries(self, interactions: list[Interaction]) -> list[HistoryEntry]:
        """Protocol history entries (oldest first) for a list of a user's interactions."""
        return [to_history_entry(self.item(x.item_id), x) for x in interactions]


def row_to_item(row: dict[str, Any], attribute_columns: tuple[str, ...] = ("genres",)) -> Item:
    """Turn an item-table row into a protocol ``Item``: title, text, and the attribute columns."""
    attributes: dict[str, Any] = {}
    for col in attribute_columns:
        val = row.get(col)
        if val is None or val == [] or val == "":
            continue
        attributes[col] = val
    text = row.get("text")
    return Item(
        id=row["item_id"],
        title=row.get("title") or row["item_id"],
        description=text if text and text.strip() else None,
        attributes=attributes or None,
    )


def to_history_entry(item: Item, interaction: Interaction) -> HistoryEntry:
    # ``item`` is already validated and ratings/timestamps come from the parsers: skip re-validation.
    fields = {**dict(item), "rating": interaction.rating, "timestamp": interaction.timestamp}
    return HistoryEntry.model_construct(**fields)


# ---- reading files with line numbers --------------------------------------------------


def require_file(path: Path, *, hint: str = "") -> Path:
    if not path.is_file():
        extra = f" ({hint})" if hint else ""
        raise DataFileError(path, f"file not found{extra}")
    return path


def read_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping blank lines."""
    require_file(path)
    try:
        with open(path, encoding=encoding, newline="") as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError as exc:
        line = None
        for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                line = n
                break
        raise DataFileError(path, f"not valid {encoding} text ({exc.reason})", line=line) from None


def parse_int(path: Path, line: int, field_name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFileError(path, f"{field_name} must be an integer, got {value!r}", line=line) from None


def parse_float(path: Path, line: int, field_name: str, value: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise DataFileError(path, f"{field_name} must be a number, got {value!r}", line=line) from None
    if not np.isfinite(out):
        raise DataFileError(path, f"{field_name} must be finite, got {value!r}", line=line)
    return out


# ---- building and caching the tables ----------------------------------------------------


@dataclass
class Tables:
    """What a parser returns: plain columns, turned into ``datasets.Dataset`` here."""

    interactions: dict[str, list[Any]]
    items: dict[str, list[Any]]
    time_kind: Literal["unix", "order"] = "unix"
    attribute_columns: tuple[str, ...] = ("genres",)
    info: dict[str, Any] = field(default_factory=dict)


def _interaction_features():
    return datasets.Features(
        {
            "user_id": datasets.Value("string"),
            "item_id": datasets.Value("string"),
            "timestamp": datasets.Value("int64"),
            "rating": datasets.Value("float64"),
        }
    )


def build_dataset(name: str, tables: Tables, source: str) -> RecDataset:
    inter = datasets.Dataset.from_dict(
        {c: tables.interactions[c] for c in INTERACTION_COLUMNS}, features=_interaction_features()
    )

    # The shared columns get fixed types (an all-null ``text`` must still be a string column).
    fixed = {"item_id": pa.string(), "title": pa.string(), "text": pa.string(), "genres": pa.list_(pa.string())}

    items = datasets.Dataset(
        InMemoryTable(pa.table({c: pa.array(v, type=fixed.get(c)) for c, v in tables.items.items()}))
    )
    return RecDataset(
        name=name,
        interactions=inter,
        items=items,
        time_kind=tables.time_kind,
        attribute_columns=tables.attribute_columns,
        source=source,
        info=tables.info,
    )


def _fingerprint(name: str, files: list[Path], options: dict[str, Any]) -> str:
    parts: list[Any] = [CACHE_VERSION, name, sorted(options.items())]
    for f in files:
        st = f.stat()
        parts.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def cache_root() -> Path:

    return cache_dir() / "datasets"


def cached_build(
    name: str, files: list[Path], parse: Callable[[], Tables], *, source: str, cache: bool, options: dict[str, Any]
) -> RecDataset:
    """Parse ``files`` once and keep the Arrow tables in the cache; reuse them while the files are unchanged."""
    if not cache:
        return build_dataset(name, parse(), source)
    for f in files:
        require_file(f)
    target = cache_root() / f"{name}-{_fingerprint(name, files, options)}"
    meta_path = target / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            return RecDataset(
                name=name,
                interactions=datasets.load_from_disk(str(target / "interactions")),
                items=datasets.load_from_disk(str(target / "items")),
                time_kind=meta["time_kind"],
                attribute_columns=tuple(meta["attribute_columns"]),
                source=source,
                info=meta.get("info", {}),
            )
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
            shutil.rmtree(target, ignore_errors=True)
    ds = build_dataset(name, parse(), source)
    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a cache write is not worth a progress bar
    try:
        with atomic_folder(target, replace=False, mode=0o755) as tmp:  # a racing writer's copy is as good
            ds.interactions.save_to_disk(str(tmp / "interactions"))
            ds.items.save_to_disk(str(tmp / "items"))
            (tmp / "meta.json").write_text(
                json.dumps({"time_kind": ds.time_kind, "attribute_columns": list(ds.attribute_columns), "info": ds.info})
            )
    except OSError:  # a read-only cache: the in-memory dataset is still good
        pass
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return ds


# ---- registry ---------------------------------------------------------------------------

Loader = Callable[..., RecDataset]
LOADERS: dict[str, Loader] = {}
LOADER_WORDS: dict[str, ItemWords] = {}


def register_loader(name: str, words: ItemWords = NEUTRAL) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS[name] = fn
        LOADER_WORDS[name] = words
        return fn

    return deco


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> RecDataset:
    """Load a dataset by registry name (``ml-100k``, ``ml-1m``, ``ml-latest-small``,
    ``amazon-beauty``, ``generic``) from ``data_dir``.

    Common options: ``cache=True`` (Arrow cache under ``$LLM_REC_CACHE_DIR/datasets``),
    ``download=False`` (MovieLens only: fetch the official archive when files are missing).
    """
    if name not in LOADERS:
        raise UnknownNameError("dataset", name, LOADERS, param="dataset")
    ds = LOADERS[name](data_dir, **options)
    ds.words = LOADER_WORDS.get(name, NEUTRAL)
    return ds


def dataset_names() -> list[str]:
    return sorted(LOADERS)
