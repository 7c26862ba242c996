"""Scoring strategies, registered by name."""

from __future__ import annotations

from ..errors import UnknownNameError
from .base import LLMScorer, Scorer, ScoreResult
from .listwise import ListwiseScorer
from .pointwise import PointwiseScorer
from .verbalizer import VerbalizerScorer

LLM_STRATEGIES: dict[str, type[LLMScorer]] = {
    VerbalizerScorer.name: VerbalizerScorer,
    PointwiseScorer.name: PointwiseScorer,
    ListwiseScorer.name: ListwiseScorer,
}


def strategy_class(name: str) -> type[LLMScorer]:
    try:
        return LLM_STRATEGIES[name]
    except KeyError:
        raise UnknownNameError("strategy", name, LLM_STRATEGIES, param="strategy") from None


__all__ = ["LLM_STRATEGIES", "LLMScorer", "ListwiseScorer", "PointwiseScorer", "ScoreResult", "Scorer", "VerbalizerScorer", "strategy_class"]
