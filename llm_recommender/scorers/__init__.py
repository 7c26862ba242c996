"""Every named way to score candidates, registered once: name -> ``module:Class`` (imported on first use).

What differs between them is said by class flags (:class:`~.base.Scorer`): ``needs_fit`` (learned
in ``llm-rec fit``: ``fused`` and the components but random), ``needs_llm`` (built on the LLM
backend: verbalizer, pointwise, listwise) and ``side`` (``item``: reads the bundle's per-item
state; ``request``: reads the request alone). Components (:class:`~.component.Component`) live on
a bundle's item space, so they rank only where a bundle is loaded. An unknown name is an error
listing the valid ones.

=================  =========================================  =====================================
folder             what                                       names
=================  =========================================  =====================================
``llm/``           zero-shot LLM strategies                   verbalizer, pointwise, listwise
``baselines/``     counts, text similarity, implicit CF       random, popularity, cooccurrence,
                                                              embedding, itemknn, als, bpr
``learned/``       models trained on the LLM's item vectors   representation, sequence
``fused.py``       the bundle's logistic fusion               fused
``../ranker/``     the bundle's LLM fine-tuned as a ranker    llm_ranker
=================  =========================================  =====================================
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from ..errors import UnknownNameError
from .base import LLMScorer, Scorer, ScoreResult
from .fused import FUSED

SCORERS: dict[str, str] = {
    FUSED: "llm_recommender.scorers.fused:FusedScorer",
    "popularity": "llm_recommender.scorers.baselines.popularity:PopularityComponent",
    "cooccurrence": "llm_recommender.scorers.baselines.cooccurrence:CooccurrenceComponent",
    "itemknn": "llm_recommender.scorers.baselines.implicit_cf:ItemKNNComponent",
    "als": "llm_recommender.scorers.baselines.implicit_cf:ALSComponent",
    "bpr": "llm_recommender.scorers.baselines.implicit_cf:BPRComponent",
    "embedding": "llm_recommender.scorers.baselines.embedding:EmbeddingComponent",
    "representation": "llm_recommender.scorers.learned.representation:RepresentationComponent",
    "sequence": "llm_recommender.scorers.learned.sequence:SequenceComponent",
    "verbalizer": "llm_recommender.scorers.llm.verbalizer:VerbalizerScorer",
    "pointwise": "llm_recommender.scorers.llm.pointwise:PointwiseScorer",
    "listwise": "llm_recommender.scorers.llm.listwise:ListwiseScorer",
    "random": "llm_recommender.scorers.baselines.random:RandomComponent",
    # the bundle's LLM fine-tuned into a ranker; its package sits above the scorers (it uses tuning/)
    "llm_ranker": "llm_recommender.ranker.component:LLMRankerComponent",
}
_classes: dict[str, type[Scorer]] = {}  # imported (or registered) classes, by name

_T = TypeVar("_T", bound=type[Scorer])


def register_scorer(cls: _T) -> _T:
    """Register a scorer class defined elsewhere (a plugin, a test) under its ``name``."""
    SCORERS[cls.name] = f"{cls.__module__}:{cls.__qualname__}"
    _classes[cls.name] = cls
    return cls


def scorer_class(name: str, *, param: str = "strategy") -> type[Scorer]:
    if name not in SCORERS:
        raise UnknownNameError("strategy", name, SCORERS, param=param)
    if name not in _classes:
        module, cls = SCORERS[name].split(":")
        _classes[name] = getattr(importlib.import_module(module), cls)
    return _classes[name]


def strategy_class(name: str, *, param: str = "strategy") -> type[LLMScorer]:
    """The class of a strategy that ranks without a bundle (the LLM strategies); an error lists those."""
    cls = scorer_class(name) if name in SCORERS else None
    if cls is None or not issubclass(cls, LLMScorer):
        raise UnknownNameError("strategy", name, [*scorer_names(needs_llm=True), f"{FUSED} and the components (with a "
                                                  "bundle)"], param=param)
    return cls


def scorer_names(*, needs_fit: bool | None = None, needs_llm: bool | None = None) -> list[str]:
    """Registered names, in registration order; the flags select (None: either)."""
    out = []
    for name in SCORERS:
        cls = scorer_class(name)
        if needs_fit in (None, cls.needs_fit) and needs_llm in (None, cls.needs_llm):
            out.append(name)
    return out


__all__ = ["FUSED", "SCORERS", "LLMScorer", "ScoreResult", "Scorer", "register_scorer", "scorer_class", "scorer_names",
           "strategy_class"]
