"""What a new scorer takes: one class, registered, plus one test class that subclasses the mixins."""

from __future__ import annotations

from typing import Literal

import numpy as np

from llm_recommender.configurable import ComponentConfig
from llm_recommender.scorers import register_scorer
from llm_recommender.scorers.component import Component
from llm_recommender.testing import ComponentTests


class LengthConfig(ComponentConfig):
    prefer: Literal["short", "long"] = "short"


@register_scorer
class LengthScorer(Component):
    """A toy scorer: candidates with shorter (or longer) titles first."""

    name = "length"
    kind = "text"
    config_class = LengthConfig

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        n = np.array([len(c.title) for c in request.candidates], dtype=float) / 100.0
        return (-n if self.config.prefer == "short" else n), [], {}


class TestLengthScorer(ComponentTests):
    component = LengthScorer
    config = {"prefer": "long"}
