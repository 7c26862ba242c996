"""Collaborative-filtering hints for the LLM ranker's prompt: a few words per candidate.

The cheapest way to put collaborative signal in front of the LLM (before learned soft item
tokens): each candidate line carries its popularity bucket in the training interactions and
its rank in a retriever's (ALS by default) ranking of the whole catalogue for this history,
in words, so that the fine-tuned LLM can learn how far to trust them against the titles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import Item
from ..scorers import scorer_class
from ..scorers.component import Component, TrainingData, as_requests
from ..scorers.item_space import ItemSpace

# (upper bound on the share of the catalogue ranked above the item, word) by training users
POPULARITY_BUCKETS = ((0.02, "very high"), (0.10, "high"), (0.30, "medium"), (1.0, "low"))
# (upper bound on the retriever's 0-based catalogue rank, word)
MATCH_BUCKETS = ((10, "very high"), (50, "high"), (200, "medium"))
HINTS_FILE = "hints.json"


def retriever_class(name: str) -> type[Component]:
    """A registered fitted component that ranks without an LLM (the ranker cannot retrieve for itself)."""
    cls = scorer_class(name, param="components.llm_ranker.retriever")
    if not issubclass(cls, Component) or cls.name == "llm_ranker" or cls.needs_llm or not cls.needs_fit:
        raise InvalidRequestError(f"{name!r} cannot be the llm_ranker's retriever: it must be a fitted component "
                                  "such as als, itemknn, popularity or sequence", param="components.llm_ranker.retriever")
    return cls


class CollaborativeHints:
    """Popularity counts and a fitted retriever over one set of training sequences."""

    def __init__(self, space: ItemSpace, retriever: Component, counts: np.ndarray) -> None:
        self.space = space
        self.retriever = retriever
        self.counts = np.asarray(counts, dtype=np.float64)
        order = np.argsort(-self.counts, kind="stable")
        share = np.empty(len(counts))
        share[order] = np.arange(len(counts)) / max(1, len(counts))
        self.popularity_share = share  # share of the catalogue more popular than the item

    @classmethod
    def fit(cls, space: ItemSpace, sequences: list[np.ndarray], retriever: str,
            retriever_config: dict[str, Any] | None, seed: int) -> CollaborativeHints:
        counts = np.zeros(len(space))
        for seq in sequences:
            counts[np.unique(seq)] += 1
        comp = retriever_class(retriever)(space, retriever_config).fit(TrainingData(space, sequences, seed=seed))
        return cls(space, comp, counts)

    def catalogue_ranks(self, history: Sequence[Item]) -> np.ndarray:
        """0-based rank of every catalogue row in the retriever's ranking for ``history`` (history items last)."""
        scores = np.asarray(self.retriever.score_many([as_requests(history, self.space.items)])[0].scores, dtype=float)
        seen = self.space.rows(list(history))
        scores[seen[seen >= 0]] = -np.inf
        ranks = np.empty(len(scores), dtype=np.int64)
        ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
        return ranks

    def words(self, rows: np.ndarray, ranks: np.ndarray) -> list[str]:
        """The hint of each candidate row (-1: not in the training catalogue)."""
        out = []
        for r in rows:
            if r < 0 or self.counts[r] == 0:
                out.append("(popularity: new; match: unknown)")
                continue
            share = self.popularity_share[r]
            pop = next(word for bound, word in POPULARITY_BUCKETS if share < bound)
            rank = int(ranks[r])
            match = next((word for bound, word in MATCH_BUCKETS if rank < bound), "low")
            out.append(f"(popularity: {pop}; match: {match})")
        return out

    def top_rows(self, ranks: np.ndarray, k: int) -> np.ndarray:
        return np.argsort(ranks, kind="stable")[:k]

    # ---- files ----------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "counts.npy", self.counts)
        (folder / HINTS_FILE).write_text(json.dumps({"retriever": self.retriever.name}) + "\n")
        self.retriever.save(folder / "retriever")

    @classmethod
    def load(cls, folder: Path, space: ItemSpace) -> CollaborativeHints:
        name = json.loads((folder / HINTS_FILE).read_text())["retriever"]
        retriever = retriever_class(name).load(folder / "retriever", space)
        return cls(space, retriever, np.load(folder / "counts.npy"))
