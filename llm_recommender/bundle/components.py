"""Fitted components of a bundle: each scores a request's candidates from its history alone.

A component is a small class with a pydantic ``config``, ``fit(data)`` on the training
split, ``score_many(requests)`` on the ``Scorer`` seam, and ``save``/``load`` of item-side
state only (counts, item-item matrices, item factors, weights): never a user id or a
user vector. Every component is also a strategy of its own (``strategy="cooccurrence"``),
so the eval harness measures each one alone through the same ``Recommender``.

Components that learn more (the sequence model, implicit CF) live in their own modules
and register here with :func:`register_component`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..configurable import ComponentConfig
from ..errors import UnknownNameError
from ..protocol import RankRequest
from ..scorers.base import Scorer, ScoreResult
from .catalogue import ItemSpace

CONFIG_FILE = "config.json"


@dataclass
class TrainingData:
    """What components learn from: the training split, as catalogue rows, and nothing else.

    ``sequences`` are per-user chronological catalogue rows *before each user's validation
    target* (the fit drops the validation and test targets); user keys exist only during the
    fit and are never written into a bundle.
    """

    space: ItemSpace
    sequences: list[np.ndarray]
    seed: int = 0
    validation: list[Any] = field(default_factory=list)  # EvalCases of validation targets: early stopping only
    model: str | None = None  # the bundle's LLM, for components that fine-tune or run it

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user code, item row) per training interaction."""
        users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(self.sequences)])
        items = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
        return users, items.astype(np.int64)


class Component(Scorer):
    """A fitted, saveable scorer over an :class:`ItemSpace`."""

    name: ClassVar[str] = "component"
    kind: ClassVar[str] = "learned"  # counts | cf | text | learned | llm
    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    needs_llm: ClassVar[bool] = False  # True: runs the LLM for every request (cost!)

    def __init__(self, space: ItemSpace, config: ComponentConfig | dict[str, Any] | None = None, **kwargs: Any):
        self.space = space
        self.config = self.validate_config(config, kwargs)

    @classmethod
    def config_param(cls) -> str:
        return f"components.{cls.name}"

    # ---- training -------------------------------------------------------------------
    def fit(self, data: TrainingData) -> Component:
        return self

    # ---- scoring --------------------------------------------------------------------
    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        out = []
        for req in requests:
            hist = self.space.rows(req.history)
            cands = self.space.rows(req.candidates)
            scores, notes, details = self.score_rows(req, hist, cands)
            scores = np.asarray(scores, dtype=float)
            out.append(
                ScoreResult(
                    scores=scores,
                    probabilities=self.probabilities(scores),
                    history_used=int((hist >= 0).sum()) if not self.needs_llm else len(req.history),
                    notes=notes,
                    details=details,
                )
            )
        return out

    @abc.abstractmethod
    def score_rows(
        self, request: RankRequest, history: np.ndarray, candidates: np.ndarray
    ) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """Scores for ``request.candidates``; ``history``/``candidates`` are catalogue rows (-1 = unseen)."""

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """A monotone map into [0, 1]; the fusion model is what makes probabilities calibrated."""
        return 1.0 / (1.0 + np.exp(-np.clip(scores, -50, 50)))

    def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
        """Evidence for candidate ``index``: which history items drove its score (override where known)."""
        return {}

    # ---- files ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(self.config.model_dump_json(indent=1) + "\n")
        self.save_state(folder)

    def save_state(self, folder: Path) -> None:  # noqa: B027 - stateless components save nothing
        pass

    def load_state(self, folder: Path) -> None:  # noqa: B027
        pass

    @classmethod
    def load(cls, folder: Path, space: ItemSpace) -> Component:
        config = json.loads((folder / CONFIG_FILE).read_text())
        comp = cls(space, config)
        comp.load_state(folder)
        return comp


COMPONENTS: dict[str, type[Component]] = {}


_T = TypeVar("_T", bound="type[Component]")


def register_component(cls: _T) -> _T:
    COMPONENTS[cls.name] = cls
    return cls


def component_class(name: str) -> type[Component]:
    _register_optional()
    try:
        return COMPONENTS[name]
    except KeyError:
        raise UnknownNameError("component", name, COMPONENTS, param="components") from None


def component_names() -> list[str]:
    _register_optional()
    return list(COMPONENTS)


def _register_optional() -> None:
    # Components in their own modules register on import (kept lazy: torch, implicit).
    from ..ranker import component as _llm_ranker  # noqa: F401
    from . import learned_components  # noqa: F401


# ---- counts ------------------------------------------------------------------------------


class PopularityConfig(ComponentConfig):
    pass


@register_component
class PopularityComponent(Component):
    """log(1 + distinct training users of the item); items never seen in training score 0."""

    name = "popularity"
    kind = "counts"
    config_class = PopularityConfig
    config: PopularityConfig

    counts: np.ndarray

    def fit(self, data: TrainingData) -> PopularityComponent:
        self.counts = np.zeros(len(self.space), dtype=np.float64)
        for seq in data.sequences:
            self.counts[np.unique(seq)] += 1
        return self

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        c = np.where(candidates >= 0, self.counts[np.maximum(candidates, 0)], 0.0)
        return np.log1p(c), [], {}

    def save_state(self, folder: Path) -> None:
        np.save(folder / "counts.npy", self.counts)

    def load_state(self, folder: Path) -> None:
        self.counts = np.load(folder / "counts.npy")


class CooccurrenceConfig(ComponentConfig):
    normalization: str = "cosine"  # cosine | count
    recency_decay: float = 1.0  # weight decay**age of each history item (1.0: a plain mean)
    max_history: int = 50


@register_component
class CooccurrenceComponent(Component):
    """Mean over history items h of C[h, c] / sqrt(n_h n_c): users who consumed both, normalised."""

    name = "cooccurrence"
    kind = "counts"
    config_class = CooccurrenceConfig
    config: CooccurrenceConfig

    def fit(self, data: TrainingData) -> CooccurrenceComponent:
        from scipy import sparse

        users, items = data.pairs()
        n_users = len(data.sequences)
        X = sparse.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, len(self.space)))
        X.data[:] = 1.0
        C = (X.T @ X).tocsr()
        self.n = C.diagonal().astype(np.float64)
        C.setdiag(0.0)
        C.eliminate_zeros()
        self.C = C.astype(np.float32)
        return self

    def _weights(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known = history[history >= 0][-self.config.max_history :]
        w = self.config.recency_decay ** np.arange(len(known))[::-1]
        return known, w

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        known, w = self._weights(history)
        scores = np.zeros(len(candidates))
        ok = candidates >= 0
        if len(known) and ok.any():
            cols = candidates[ok]
            sub = self.C[known][:, cols].toarray().astype(np.float64)
            if self.config.normalization == "cosine":
                sub = sub / np.sqrt(np.maximum(self.n[known][:, None] * self.n[cols][None, :], 1.0))
            scores[ok] = (w[:, None] * sub).sum(0) / w.sum()
        notes = [] if len(known) else ["no history item occurs in the training interactions"]
        return scores, notes, {}

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(scores, 0.0, 1.0) if self.config.normalization == "cosine" else scores / (1.0 + scores)

    def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
        history = self.space.rows(request.history)
        cand = int(self.space.rows([request.candidates[index]])[0])
        known, _ = self._weights(history)
        if cand < 0 or not len(known):
            return {}
        counts = self.C[known][:, [cand]].toarray()[:, 0]
        order = np.argsort(-counts, kind="stable")
        return {"cooccurring": [(self.space.items[known[k]].id, int(counts[k])) for k in order[:6] if counts[k] > 0]}

    def save_state(self, folder: Path) -> None:
        from scipy import sparse

        sparse.save_npz(folder / "cooccurrence.npz", self.C)
        np.save(folder / "item_users.npy", self.n)

    def load_state(self, folder: Path) -> None:
        from scipy import sparse

        self.C = sparse.load_npz(folder / "cooccurrence.npz").tocsr()
        self.n = np.load(folder / "item_users.npy")


# ---- text --------------------------------------------------------------------------------


class TextSimilarityConfig(ComponentConfig):
    vectors: str = "minilm"  # which item vectors of the ItemSpace: minilm | llm
    recency_decay: float = 0.9
    max_history: int = 50


class _TextSimilarity(Component):
    kind = "text"
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


@register_component
class EmbeddingComponent(_TextSimilarity):
    """Cosine between the candidate's MiniLM text embedding and the history's recency-weighted mean."""

    name = "embedding"


# ---- the zero-shot LLM strategies as fusion components ----------------------------------


class LLMStrategyConfig(ComponentConfig):
    strategy: str = "verbalizer"


class LLMStrategyComponent(Component):
    """A zero-shot LLM strategy (verbalizer, pointwise) inside the fusion: costs an LLM pass per request."""

    kind = "llm"
    needs_llm = True
    config_class = LLMStrategyConfig
    config: LLMStrategyConfig
    llm_scorer: Scorer | None = None  # set by the Recommender (it owns the backend)

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        if self.llm_scorer is None:
            raise RuntimeError("the LLM strategy component has no scorer attached")
        return self.llm_scorer.score_many(requests)

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def llm_component(strategy: str) -> type[LLMStrategyComponent]:
    return type(f"{strategy.title()}Component", (LLMStrategyComponent,), {"name": f"llm-{strategy}"})


def as_requests(history_items: Sequence[Any], candidates: Sequence[Any]) -> RankRequest:
    """An internal request (no validation: items are already validated) for retrieval over the catalogue."""
    return RankRequest.model_construct(history=list(history_items), candidates=list(candidates), top_k=10,
                                       reasons=False, strategy=None)


class RandomConfig(ComponentConfig):
    seed: int = 0


@register_component
class RandomComponent(Component):
    """Uniform random scores, seeded by the request's items: the chance reference (never in a fusion)."""

    name = "random"
    kind = "reference"
    config_class = RandomConfig
    config: RandomConfig

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        import zlib

        key = "|".join([str(self.config.seed), *(h.id for h in request.history), "#", *(c.id for c in request.candidates)])
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return rng.random(len(candidates)), [], {}

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=float)
