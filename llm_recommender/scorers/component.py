"""Fitted scorers ("components" of a bundle): each scores a request's candidates from its history alone.

A component is a small class with a pydantic ``config``, ``fit(data)`` on the training
split, ``score_many(requests)`` on the ``Scorer`` seam, and ``save``/``load`` of item-side
state only (counts, item-item matrices, item factors, weights): never a user id or a
user vector. Every component is also a strategy of its own (``strategy="cooccurrence"``),
so the eval harness measures each one alone through the same ``Recommender``. Each is
registered by name in :mod:`llm_recommender.scorers`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..configurable import ComponentConfig
from ..errors import InvalidRequestError
from ..protocol import RankRequest
from .base import Scorer, ScoreResult
from .item_space import ItemSpace

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RayTraining:
    """Where a component that can train data-parallel does so: a Ray cluster (``llm-rec fit --ray-address``).

    ``address``: ``local`` starts a local cluster of ``workers x cpus_per_worker`` CPUs for the training (stopped
    after it); anything else is passed to ``ray.init``. ``storage``: the folder Ray Train keeps checkpoints in (a run
    resumes from there); None: ``<cache>/ray-train``. On a multi-node cluster it must be storage every node reaches.
    ``on_epoch(epoch, rank)``: a test seam, called on every worker after each epoch's report."""

    address: str
    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    storage: Path | None = None
    on_epoch: Callable[[int, int], None] | None = None


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
    # with cold items kept out of training: validation cases among cold candidates (what a choice between a text
    # path and none must also weigh); empty otherwise
    cold_validation: list[Any] = field(default_factory=list)
    model: str | None = None  # the bundle's LLM (the fit's --model), for components that fine-tune or run it
    ray: RayTraining | None = None  # components that can train on Ray Train do so there (the sequence model)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(user code, item row) per training interaction."""
        users = np.concatenate([np.full(len(s), u, dtype=np.int64) for u, s in enumerate(self.sequences)])
        items = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
        return users, items.astype(np.int64)


class Component(Scorer):
    """A fitted, saveable scorer over an :class:`ItemSpace`."""

    name: ClassVar[str] = "component"
    kind: ClassVar[str] = "learned"  # counts | cf | text | learned: recorded in bundle.json
    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    needs_fit = True
    side = "item"
    vectors: ClassVar[tuple[str, ...]] = ()  # the ItemSpace vectors it needs (``llm``, ``minilm``): the fit makes them
    trains_on_ray: ClassVar[bool] = False  # fit() trains on Ray Train when TrainingData.ray is set
    # config fields that may change when a fitted bundle loads (where it scores, not what it learned)
    serving_fields: ClassVar[frozenset[str]] = frozenset()
    ray_train: dict[str, Any] | None = None  # after such a fit: how it trained there (bundle.json records it)

    def __init__(self, space: ItemSpace, config: ComponentConfig | dict[str, Any] | None = None, **kwargs: Any):
        self.space = space
        self.config = self.validate_config(config, kwargs)

    @classmethod
    def config_param(cls) -> str:
        return f"components.{cls.name}"

    # ---- training -------------------------------------------------------------------
    def configure_serving(self, update: Mapping[str, Any]) -> None:
        """Change how the fitted component scores (its ``serving_fields`` only: what it learned stays)."""
        fixed = sorted(set(update) - self.serving_fields)
        if fixed:
            allowed = (f"at serving time only these can change: {', '.join(sorted(self.serving_fields))}"
                       if self.serving_fields else "none of its settings changes at serving time")
            raise InvalidRequestError(f"{self.name}: {', '.join(fixed)} was fixed by the fit; {allowed}",
                                      param=f"component_config.{self.name}.{fixed[0]}")
        self.config = self.validate_config({**self.config.model_dump(), **update}, {})

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
                    history_used=int((hist >= 0).sum()),
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


def as_requests(history_items: Sequence[Any], candidates: Sequence[Any]) -> RankRequest:
    """An internal request (no validation: items are already validated) for retrieval over the catalogue."""
    return RankRequest.model_construct(history=list(history_items), candidates=list(candidates), top_k=10,
                                       reasons=False, strategy=None)
