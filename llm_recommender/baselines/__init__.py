"""Non-LLM baseline scorers, registered by name: random, popularity, embedding, cooccurrence, and the
trained collaborative filtering of ``implicit``: als, bpr, itemknn (the ``cf`` extra, needed to fit)."""

from __future__ import annotations

from typing import Any

from ..errors import UnknownNameError
from .base import BaselineScorer, item_text
from .cooccurrence import CooccurrenceScorer
from .embedding import EmbeddingScorer
from .implicit_cf import ALSScorer, BPRScorer, ImplicitScorer, ItemKNNScorer
from .popularity import PopularityScorer
from .random_scores import RandomScorer

BASELINES: dict[str, type[BaselineScorer]] = {
    cls.name: cls
    for cls in (
        RandomScorer,
        PopularityScorer,
        EmbeddingScorer,
        CooccurrenceScorer,
        ALSScorer,
        BPRScorer,
        ItemKNNScorer,
    )
}


def baseline_class(name: str) -> type[BaselineScorer]:
    try:
        return BASELINES[name]
    except KeyError:
        raise UnknownNameError("baseline", name, BASELINES, param="scorers") from None


def make_baseline(name: str, **options: Any) -> BaselineScorer:
    """A baseline by name; those that learn from interactions still need ``.fit(...)`` on training data."""
    return baseline_class(name)(**options)


__all__ = [
    "BASELINES",
    "ALSScorer",
    "BPRScorer",
    "BaselineScorer",
    "CooccurrenceScorer",
    "EmbeddingScorer",
    "ImplicitScorer",
    "ItemKNNScorer",
    "PopularityScorer",
    "RandomScorer",
    "baseline_class",
    "item_text",
    "make_baseline",
]
