"""The reason audit's checks: what a reason must never say, counted over responses.

Used by ``eval/audit_reasons.py`` (ML-100K, Amazon Beauty, chat turns) and by the test that runs the same
checks on a small fitted bundle. Each check reads the response and the request as a client would, and the
bundle's manifest (which components the fusion kept, what the items are called):

* ``invented_ratings``: a reason states a rating ("you rated X 5★", "gave X 4 stars") the request's history
  does not hold for X (chat likes carry none);
* ``false_recency``: "most recently" / "follows on" where the sequence model did not carry the item
  (:func:`~.reasons.recency_is_real`), or on a ranking with no evidence at all;
* ``dropped_citations``: a component the fusion dropped appears in the evidence, or its phrase in a reason;
* ``movie_words``: watch/viewer/movie/film on a catalogue that is not movies;
* ``confident_low_p``: a low-probability item (:func:`~.reasons.is_low`) whose reason is not hedged;
* ``distinct``: distinct reasons / reasons, per response.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.movielens import natural_title
from ..protocol import RankRequest, RankResponse
from .degenerate import movie_words_off_movies
from .reasons import HEDGE, is_low, recency_is_real

_RATED = re.compile(r"(?:rated|gave) (.+?),? (\d+(?:\.\d+)?) ?(?:★|stars?\b)", re.IGNORECASE)
_RECENCY = re.compile(r"most recently|follows on", re.IGNORECASE)
# A phrase that only one component family's reason uses (see explain/reasons.py).
PHRASES = {("sequence",): _RECENCY, ("als", "bpr"): re.compile(r"taste your history shows"),
           ("embedding",): re.compile(r"\bdescribed\b"), ("representation",): re.compile(r"language model reads"),
           ("popularity",): re.compile(r"\bis widely\b"), ("cooccurrence", "itemknn"): re.compile(r"often \w+ (this|.+) too")}


@dataclass
class AuditCounts:
    responses: int = 0
    reasons: int = 0
    invented_ratings: int = 0
    false_recency: int = 0
    dropped_citations: int = 0
    movie_words: int = 0
    confident_low_p: int = 0
    low_p_items: int = 0
    empty_reasons: int = 0
    distinct_fraction: list[float] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def flag(self, what: str, text: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        self.examples.setdefault(what, [])
        if len(self.examples[what]) < 3:
            self.examples[what].append(text)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        fr = d.pop("distinct_fraction")
        d["distinct_mean"] = round(sum(fr) / len(fr), 4) if fr else None
        d["distinct_worst"] = round(min(fr), 4) if fr else None
        return d


def invented_rating(reason: str, history: Sequence[Any]) -> bool:
    for m in _RATED.finditer(reason):
        named, value = m.group(1).strip(" \"'"), float(m.group(2))
        given = [h for h in history if named in (h.title, natural_title(h.title))]
        if not any(h.rating is not None and not h.stated and abs(h.rating - value) < 1e-9 for h in given):
            return True
    return False


def audit_response(counts: AuditCounts, request: RankRequest, response: RankResponse, *, kept: Iterable[str],
                   dropped: Iterable[str], noun: str) -> None:
    """Add one response's findings to ``counts``."""
    kept, dropped = set(kept), set(dropped)
    counts.responses += 1
    items = response.items
    reasons = [it.reason for it in items if it.reason]
    counts.reasons += len(reasons)
    counts.empty_reasons += sum(1 for it in items if not it.reason)
    if reasons:
        counts.distinct_fraction.append(len(set(reasons)) / len(reasons))
    top_p = max((it.probability for it in items), default=None)
    words = type("W", (), {"noun": noun})()
    for it in items:
        reason = it.reason or ""
        if invented_rating(reason, request.history):
            counts.flag("invented_ratings", reason)
        if _RECENCY.search(reason) and (it.evidence is None or not recency_is_real(it.evidence, request.history)):
            counts.flag("false_recency", reason)
        named = set(it.evidence.contributions) | {e.component for e in it.evidence.history_items} if it.evidence else set()
        phrased = {c for fam, rx in PHRASES.items() if rx.search(reason) and not set(fam) & kept for c in fam} if it.evidence else set()
        if named & dropped or phrased & dropped:
            counts.flag("dropped_citations", f"{reason} [{sorted((named | phrased) & dropped)}]")
        if movie_words_off_movies(reason, words):
            counts.flag("movie_words", reason)
        if is_low(it.probability, top_p):
            counts.low_p_items += 1
            if reason and not reason.startswith(HEDGE):
                counts.flag("confident_low_p", f"P={it.probability:.4f}: {reason}")


GOALS = {"invented_ratings": 0, "false_recency": 0, "dropped_citations": 0, "movie_words": 0, "confident_low_p": 0}
DISTINCT_GOAL = 0.95


def failures(summary: dict[str, Any]) -> list[str]:
    """The goals a summary misses (empty: all met)."""
    out = [f"{k}={summary[k]} (goal {v})" for k, v in GOALS.items() if summary[k] > v]
    if summary["distinct_mean"] is not None and summary["distinct_mean"] < DISTINCT_GOAL:
        out.append(f"distinct_mean={summary['distinct_mean']} (goal >= {DISTINCT_GOAL})")
    return out
