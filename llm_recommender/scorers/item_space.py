"""The bundle's item side: the catalogue and the items' cached vector representations.

``ItemSpace`` answers "which catalogue row is this item" and "what is its vector of kind
K" for any item of a request. Catalogue items are looked up by id; an item the bundle has
never seen gets no row (``-1``) and, when a component needs its vector, the vector is
computed from its text by the kind's encoder (the LLM for ``llm``, MiniLM for
``minilm``), created lazily on first use, so a request made only of known items never
loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from ..errors import BundleError
from ..protocol import Item

CATALOGUE_FILE = "catalogue.jsonl"
VECTORS_FILE = "item_vectors.safetensors"
# Above this many items, components whose cost grows with the catalogue times itself or times the interactions
# switch to bounded variants: the sequence model's sampled softmax, co-occurrence's pruned rows. ML-100K, ML-1M
# and Amazon Beauty stay below it (measured: docs/fit-at-scale.md, "Past 20,000 items").
LARGE_CATALOGUE_ITEMS = 20_000

Encoder = Callable[[Sequence[Item]], np.ndarray]


def plain_item(item: Item) -> Item:
    """The item without history fields (rating, timestamp): vectors depend on the item alone."""
    if type(item) is Item:
        return item
    return Item(id=item.id, title=item.title, description=item.description, attributes=item.attributes)


class ItemSpace:
    def __init__(
        self,
        items: Sequence[Item],
        vectors: dict[str, np.ndarray] | None = None,
        encoders: dict[str, Callable[[], Encoder]] | None = None,
    ) -> None:
        self.items = [plain_item(i) for i in items]
        self.index = {it.id: k for k, it in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise BundleError("the catalogue has duplicate item ids", param="catalogue")
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in (vectors or {}).items()}
        for kind, mat in self.vectors.items():
            if mat.shape[0] != len(self.items):
                raise BundleError(
                    f"{kind} vectors have {mat.shape[0]} rows for {len(self.items)} catalogue items",
                    param=f"item_vectors.{kind}",
                )
        self._encoder_factories = dict(encoders or {})
        self._encoders: dict[str, Encoder] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.items]

    def rows(self, items: Sequence[Item]) -> np.ndarray:
        """Catalogue row of each item, ``-1`` for items the bundle has never seen."""
        return np.fromiter((self.index.get(i.id, -1) for i in items), dtype=np.int64, count=len(items))

    def set_encoder(self, kind: str, factory: Callable[[], Encoder]) -> None:
        self._encoder_factories[kind] = factory
        self._encoders.pop(kind, None)

    def encoder(self, kind: str) -> Encoder:
        if kind not in self._encoders:
            if kind not in self._encoder_factories:
                raise BundleError(
                    f"no encoder for {kind!r} vectors: the bundle cannot represent items it has not seen",
                    param=f"item_vectors.{kind}",
                )
            self._encoders[kind] = self._encoder_factories[kind]()
        return self._encoders[kind]

    def vectors_for(self, kind: str, items: Sequence[Item], rows: np.ndarray | None = None) -> np.ndarray:
        """``(len(items), d)`` vectors: catalogue rows from the cache, unseen items encoded from their text."""
        if kind not in self.vectors:
            raise BundleError(f"the bundle holds no {kind!r} item vectors", param=f"item_vectors.{kind}")
        table = self.vectors[kind]
        rows = self.rows(items) if rows is None else rows
        out = np.empty((len(items), table.shape[1]), dtype=np.float32)
        known = rows >= 0
        out[known] = table[rows[known]]
        if not known.all():
            unseen = [plain_item(items[k]) for k in np.flatnonzero(~known)]
            out[~known] = np.asarray(self.encoder(kind)(unseen), dtype=np.float32)
        return out

    # ---- files ----------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        with open(folder / CATALOGUE_FILE, "w", encoding="utf-8") as fh:
            for item in self.items:
                fh.write(item.model_dump_json(exclude_none=True) + "\n")
        if self.vectors:
            save_file({k: np.ascontiguousarray(v) for k, v in self.vectors.items()}, str(folder / VECTORS_FILE))

    @classmethod
    def load(cls, folder: Path) -> ItemSpace:
        items = []
        with open(folder / CATALOGUE_FILE, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    items.append(Item.model_validate(json.loads(line)))
        vec_path = folder / VECTORS_FILE
        vectors = load_file(str(vec_path)) if vec_path.is_file() else {}
        return cls(items, vectors)
