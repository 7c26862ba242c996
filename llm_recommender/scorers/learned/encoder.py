"""Item representations h_i: pooled hidden states of a causal LM over each item's rendered text.

The pooling itself runs in the backend (:mod:`llm_recommender.backends.pooling`); this module
renders the items, keys and caches the vectors.

An item is rendered with ``prompts/representation_item.j2`` (no chat wrapper) and run
through the model once; the hidden states of the chosen ``layer`` (default: the middle
layer, measured best on SmolLM2; negatives count from the top) are pooled over the item's tokens (``mean``)
or taken at its last token (``last``). Vectors are cached on disk under
``cache_dir()/representations/<key>/`` where the key hashes the model identity (name,
config, dtype), the template source, layer and pooling; entries are keyed by the
rendered text, so an item seen by many users (or in many runs) is encoded once.

Nothing here is fitted: h_i depends only on the item's text and the model, never on
interactions, so the cache cannot carry a target's label into training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...backends.pooling import Pooling, model_identity, pooled_hidden_states, resolve_layer
from ...files import atomic_write
from ...model_store import cache_dir
from ...prompts import PromptRenderer
from ...protocol import Item
from ..item_space import plain_item

log = logging.getLogger(__name__)

ITEM_TEMPLATE = "representation_item.j2"


class ItemEncoder:
    """Pooled hidden states over rendered item texts, with an on-disk cache.

    Built from a backend that ``supports_hidden_states`` (:meth:`from_backend`), or from a loaded
    causal LM and its tokenizer directly. ``renderer`` renders the item template.
    ``cache=False`` keeps vectors in memory only.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        renderer: PromptRenderer,
        *,
        model_name: str,
        layer: int | None = None,
        pooling: Pooling = "mean",
        batch_size: int = 32,
        cache: bool | Path = True,
        backend: Any = None,
    ) -> None:
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        if backend is not None:
            self._identity = backend.hidden_state_identity()
            self._pool = backend.hidden_states
        else:
            self._identity = model_identity(model)

            def pool(texts: Sequence[str], *, layers: Sequence[int], pooling: Pooling) -> list[np.ndarray]:
                return pooled_hidden_states(model, tokenizer, list(texts), layers=layers, pooling=pooling)

            self._pool = pool
        self.renderer = renderer
        self.model_name = model_name
        self.layer = resolve_layer(self._identity["num_layers"], layer)
        self.pooling: Pooling = pooling
        self.batch_size = batch_size
        self._mem: dict[str, np.ndarray] = {}
        self._dirty = False
        self.cache_path: Path | None = None
        if cache:
            root = Path(cache) if isinstance(cache, Path) else cache_dir() / "representations"
            self.cache_path = root / self.cache_key() / "vectors.npz"
            self._load_cache()

    @classmethod
    def from_backend(cls, backend: Any, renderer: PromptRenderer, **kwargs: Any) -> ItemEncoder:
        """The encoder over ``backend``'s hidden states; a typed error if the backend has none."""
        backend.require("hidden_states")
        return cls(None, None, renderer, model_name=backend.model_name, backend=backend, **kwargs)

    # ---- identity -------------------------------------------------------------------
    def template_source(self) -> str:
        env = self.renderer.env
        return env.loader.get_source(env, ITEM_TEMPLATE)[0]  # type: ignore[union-attr]

    def cache_key(self) -> str:
        ident = json.dumps(
            {
                "model": self.model_name,
                "config": self._identity["config"],
                "dtype": self._identity["dtype"],
                "template": self.template_source(),
                "layer": self.layer,
                "pooling": self.pooling,
                "weights": self._identity["weights"],
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(ident.encode()).hexdigest()[:20]

    def model_fingerprint(self) -> str:
        """Model identity (config, dtype, a sample of the weights): what a bundle's vectors depend on."""
        return self.cache_key()

    @property
    def dim(self) -> int:
        return int(self._identity["hidden_size"])

    # ---- cache ----------------------------------------------------------------------
    def _load_cache(self) -> None:
        assert self.cache_path is not None
        if self.cache_path.is_file():
            try:
                with np.load(self.cache_path, allow_pickle=False) as z:
                    keys, vecs = z["keys"], z["vectors"]
                self._mem.update(zip((str(k) for k in keys), vecs))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # a corrupt cache is recomputed
                log.warning("ignoring unreadable representation cache %s: %s", self.cache_path, exc)

    def flush(self) -> None:
        if self.cache_path is None or not self._dirty:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._mem), dtype=str)
        vecs = np.stack(list(self._mem.values())).astype(np.float32)
        with atomic_write(self.cache_path) as tmp:
            np.savez(tmp, keys=keys, vectors=vecs)
        self._dirty = False

    # ---- encoding -------------------------------------------------------------------
    def item_text(self, item: Item) -> str:
        return self.renderer.render(ITEM_TEMPLATE, item=self.renderer.item_view(plain_item(item))).strip()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._mem))
        if missing:
            bar = None
            if len(missing) > 4 * self.batch_size:  # a whole catalogue: minutes on a CPU, show progress
                bar = tqdm(total=len(missing), desc="LLM item representations", unit="item", dynamic_ncols=True)
            try:
                for start in range(0, len(missing), self.batch_size):
                    chunk = missing[start : start + self.batch_size]
                    self._mem.update(zip(chunk, self._forward(chunk)))
                    self._dirty = True
                    if bar is not None:
                        bar.update(len(chunk))
                        if start // self.batch_size % 20 == 19:
                            self.flush()  # an interrupted encoding resumes from here
            finally:
                if bar is not None:
                    bar.close()
                self.flush()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._mem[t] for t in texts])

    def encode_items(self, items: Sequence[Item]) -> np.ndarray:
        return self.encode_texts([self.item_text(i) for i in items])

    def _forward(self, texts: list[str]) -> np.ndarray:
        return self._pool(texts, layers=[self.layer], pooling=self.pooling)[0]
