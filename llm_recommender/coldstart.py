"""Cold start and unknown history: what the recommender answers when it knows nothing of the user.

Before scoring, :class:`ColdStart` looks at a request's history against the bundle's catalogue:

1. History entries whose id the catalogue does not know are linked by title with the chat
   agent's linker (strictly: a made-up title must not land on a random item). A linked entry
   takes the catalogue item (id, title, attributes) and keeps the user's rating and timestamp;
   what stays unknown is named in the response's ``notes``.
2. When no history entry is known (an empty history, or nothing could be linked), ranking by
   the history would rank by nothing: the answer is the catalogue's most popular items instead,
   marked ``basis="popularity"``. Popularity is the number of the bundle's training users who
   interacted with an item (the popularity component's counts, else the co-occurrence
   component's item counts), and an item's probability is that number over the training users:
   a base rate, not a personal estimate.

A bundle that stores no counts cannot do 2; the ranking then goes ahead and is marked
``basis="none"`` with a note, as is an empty history without a bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .protocol import HistoryEntry, Item, RankRequest
from .scorers.base import ScoreResult

Basis = Literal["history", "popularity", "none"]

COLD_START_ASK = "Tell me a few things you like."
# A history title must match a catalogue title this closely (0-100, the agent's match score) to be
# linked: typos and a missing article pass, a shared word or a made-up title does not.
HISTORY_LINK_THRESHOLD = 90.0
MAX_NAMED = 5  # history entries named in one note
MAX_NAME_CHARS = 60
POPULAR_SHARE = 0.02  # "popular with everyone": the catalogue's top 2% by popularity (at least the top 3)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _named(parts: list[str]) -> str:
    more = len(parts) - MAX_NAMED
    return "; ".join(parts[:MAX_NAMED]) + (f"; and {more} more" if more > 0 else "")


@dataclass
class Popularity:
    """Interaction counts per catalogue row, and the training users they are out of."""

    counts: np.ndarray
    users: int | None
    source: str
    ranks: np.ndarray = field(init=False)  # 1-based rank of each row by count (ties: catalogue order)
    popular_rank: int = field(init=False)  # ranks up to this one are "popular with everyone"

    @classmethod
    def of(cls, bundle: Any) -> Popularity | None:
        """The counts a bundle stores: the popularity component's, else co-occurrence's (distinct users
        per item, the same number); None when it has neither."""
        for name, attr in (("popularity", "counts"), ("cooccurrence", "n")):
            counts = getattr(bundle.components.get(name), attr, None)
            if counts is not None and len(counts) == len(bundle.space):
                counts = np.asarray(counts, dtype=np.float64)
                users = bundle.manifest.dataset.get("users")
                ok = isinstance(users, int) and users > 0 and users >= counts.max(initial=0.0)
                return cls(counts, users if ok else None, name)
        return None

    def __post_init__(self) -> None:
        order = np.argsort(-self.counts, kind="stable")
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(1, len(order) + 1)
        self.ranks = ranks
        self.popular_rank = max(3, int(POPULAR_SHARE * len(order)))

    def probability(self, count: float) -> float:
        if self.users:
            return count / self.users
        total = float(self.counts.sum())
        return count / total if total > 0 else 0.0

    def meaning(self) -> str:
        if self.users:
            return f"probability = the share of the bundle's {self.users:,} training users who chose the item"
        return "probability = the item's share of all training interactions (the bundle records no user count)"

    def reason(self, row: int) -> str:
        if row < 0:
            return f"Not in this catalogue, so there is no popularity to rank it by. {COLD_START_ASK}"
        count, rank = int(self.counts[row]), int(self.ranks[row])
        by = f"chosen by {count:,} of {self.users:,} users" if self.users else f"{count:,} users chose it"
        where = f"#{rank:,} of {len(self.counts):,} in this catalogue, {by}"
        if count > 0 and rank <= self.popular_rank:
            return f"Popular with everyone: {where}. {COLD_START_ASK}"
        return f"Ranked by popularity alone: {where}. {COLD_START_ASK}"


@dataclass
class Resolved:
    """A request whose history has been checked against the catalogue (and linked by title)."""

    request: RankRequest
    known: int  # history entries the catalogue knows, after linking
    notes: list[str] = field(default_factory=list)


class ColdStart:
    """The cold-start side of one bundle: history linking, the popularity prior, the popularity answer."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.popularity = Popularity.of(bundle)
        self._linker: Any = None
        self._linker_error: str | None = None

    # ---- history ----------------------------------------------------------------------
    def resolve(self, request: RankRequest) -> Resolved:
        """Link history entries the catalogue does not know by title; name the rest in notes."""
        index = self.bundle.space.index
        unknown = [k for k, h in enumerate(request.history) if h.id not in index]
        if not unknown:
            return Resolved(request, len(request.history))
        linker = self._link_parser()
        history = list(request.history)
        linked: list[str] = []
        missed: list[str] = []
        for k in unknown:
            entry = history[k]
            mention = linker.link(entry.title, "liked", HISTORY_LINK_THRESHOLD) if linker is not None else None
            item = self.bundle.space.items[index[mention.item_id]] if mention is not None and mention.item_id else None
            if item is not None:
                history[k] = HistoryEntry(**item.model_dump(), rating=entry.rating, timestamp=entry.timestamp,
                                          stated=entry.stated)
                linked.append(f"{_short(entry.title)!r} (id {_short(entry.id)!r}) -> {_short(item.title)!r} (id {item.id!r})")
            elif mention is not None and mention.candidates:
                options = ", ".join(repr(_short(c.title)) for c in mention.candidates[:3])
                missed.append(f"id {_short(entry.id)!r} ({_short(entry.title)!r}: several titles match, {options}; "
                              "send the catalogue id)")
            else:
                missed.append(f"id {_short(entry.id)!r} ({_short(entry.title)!r})")
        notes = []
        if linked:
            notes.append(f"linked {len(linked)} history item(s) the catalogue does not know by their title: {_named(linked)}")
        if missed:
            why = f" ({self._linker_error})" if self._linker_error else ""
            notes.append(f"{len(missed)} history item(s) are not in the catalogue and were not linked by title{why}: "
                         f"{_named(missed)}")
        return Resolved(request.model_copy(update={"history": history}), len(request.history) - len(missed), notes)

    def _link_parser(self) -> Any:
        if self._linker is None and self._linker_error is None:
            try:
                from .agent.catalogue import CatalogueIndex
                from .agent.parser import DeterministicParser
            except ImportError:
                self._linker_error = "linking by title needs the [agent] extra (rapidfuzz), which is not installed"
            else:
                self._linker = DeterministicParser(CatalogueIndex.from_bundle(self.bundle))
        return self._linker

    # ---- the popularity answer --------------------------------------------------------
    def popular(self, k: int, pool: Sequence[Item] | None = None, exclude: Sequence[str] = ()) -> list[Item]:
        """The ``k`` most popular items of ``pool`` (default: the catalogue), ``exclude`` left out."""
        assert self.popularity is not None
        banned = set(exclude)
        items = [it for it in (self.bundle.space.items if pool is None else pool) if it.id not in banned]
        order = self._order(items)
        return [items[i] for i in order[:k]]

    def _order(self, items: Sequence[Item]) -> np.ndarray:
        assert self.popularity is not None
        rows = self.bundle.space.rows(items)
        counts = np.where(rows >= 0, self.popularity.counts[np.maximum(rows, 0)], -1.0)
        return np.argsort(-counts, kind="stable")

    def ranking(self, resolved: Resolved) -> tuple[RankRequest, ScoreResult]:
        """The popularity answer as a ranking: the request's candidates (without any, the catalogue's) most
        popular first, with their scores, probabilities, notes and their own reasons (``details["reasons"]``),
        which ``explain_ranking`` uses as they are."""
        pop = self.popularity
        assert pop is not None
        request = resolved.request
        if request.candidates:
            top = [request.candidates[i] for i in self._order(request.candidates)[: request.top_k]]
        else:
            top = self.popular(request.top_k, exclude=[h.id for h in request.history])
        rows = self.bundle.space.rows(top)
        counts = np.where(rows >= 0, pop.counts[np.maximum(rows, 0)], 0.0).astype(float)
        probabilities = np.array([min(1.0, pop.probability(c)) if row >= 0 else 0.0 for c, row in zip(counts, rows)])
        what = "the history is empty" if not request.history else "no history item is in the catalogue"
        notes = [f"cold start: {what}, so these are ranked by popularity alone (score = training users who chose "
                 f"the item; {pop.meaning()}); tell me a few things you like for a personal ranking"]
        if request.strategy:
            notes.append(f"strategy {request.strategy!r} was not used: there is no known history for it to score")
        result = ScoreResult(scores=counts, probabilities=probabilities, history_used=0, order=list(range(len(top))),
                             notes=notes, details={"reasons": [pop.reason(int(row)) for row in rows]})
        return request.model_copy(update={"candidates": top}), result


def no_signal_note(request: RankRequest, has_bundle: bool) -> str:
    """Why a ranking has no user signal (``basis="none"``)."""
    if not has_bundle:
        return ("the history is empty: this ranking has no user signal (it reflects how the model reads the candidates "
                "alone); give a few things the user liked for a personal ranking")
    what = "the history is empty" if not request.history else "no history item is in the catalogue"
    return (f"{what}, and this bundle stores no interaction counts (no popularity or co-occurrence component) to fall "
            "back on: this ranking has no user signal")
