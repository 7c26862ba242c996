"""Non-LLM baseline scorers on the ``Scorer`` seam.

Every baseline takes ``score_many(requests, cutoffs=None)``: ``cutoffs[k]`` is the time
of request ``k``'s target (the runner knows it; requests do not carry it). Only the
time-aware baselines use it (popularity); the others accept and ignore it, so the
runner can call all of them the same way. Baselines that learn from interactions
are given plain arrays through ``fit(...)``, never a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequestError
from ..protocol import Item, RankRequest
from ..scorers.base import Scorer, ScoreResult

DEFAULT_TEXT_FIELDS = ("title", "attributes")
TEXT_FIELDS = ("title", "description", "attributes")


class BaselineScorer(Scorer):
    def is_fitted(self) -> bool:
        return True

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise InvalidRequestError(
                f"baseline {self.name!r} must be fitted on training interactions before scoring (call .fit(...))",
                param="scorer",
            )

    @staticmethod
    def _check_cutoffs(requests: Sequence[RankRequest], cutoffs: Sequence[Any] | None) -> list[Any]:
        if cutoffs is None:
            return [None] * len(requests)
        cutoffs = list(cutoffs)
        if len(cutoffs) != len(requests):
            raise InvalidRequestError(f"{len(cutoffs)} cutoffs for {len(requests)} requests", param="cutoffs")
        return cutoffs

    def score_many(self, requests: list[RankRequest], cutoffs: Sequence[Any] | None = None) -> list[ScoreResult]:
        raise NotImplementedError

    def score(self, request: RankRequest, cutoff: Any = None) -> ScoreResult:  # type: ignore[override]
        return self.score_many([request], cutoffs=[cutoff])[0]


def item_text(item: Item, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
    """Text an item is embedded as: e.g. ``"Toy Story (1995). genres: Animation, Comedy"``."""
    parts: list[str] = []
    for field in fields:
        if field == "title":
            parts.append(item.title.strip())
        elif field == "description" and item.description:
            parts.append(item.description.strip())
        elif field == "attributes" and item.attributes:
            for key, value in item.attributes.items():
                shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
                if shown:
                    parts.append(f"{key}: {shown}")
        elif field not in TEXT_FIELDS:
            raise InvalidRequestError(
                f"unknown item text field {field!r}; valid: {', '.join(TEXT_FIELDS)}", param="text_fields"
            )
    return ". ".join(p for p in parts if p)
