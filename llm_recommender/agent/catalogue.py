"""Catalogue lookup for the chat agent: fuzzy title matching (rapidfuzz) over protocol ``Item``s.

Titles are matched on a normalised key: lower case, accents folded, the year and a
MovieLens-style trailing article ("Godfather, The (1972)") removed, leading articles
dropped, punctuation collapsed. Alternative titles in parentheses ("Seven (a.k.a. Se7en)")
are indexed as aliases. An optional ``embed`` hook (texts -> vectors) catches mentions the
fuzzy match misses, e.g. a description instead of a title.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from ..protocol import Item, item_genres

_YEAR = re.compile(r"\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_PAREN = re.compile(r"\s*\(([^()]*)\)")
_NON_WORD = re.compile(r"[^\w]+")
_AKA = re.compile(r"^(?:a\.k\.a\.|aka)\s+", re.IGNORECASE)
_NUMBER = re.compile(r"\b(?:\d+|v|x)\b")
_ROMAN_VALUES = {"ii": "2", "iii": "3", "iv": "4", "vi": "6", "vii": "7", "viii": "8", "ix": "9"}
_ROMAN = re.compile(r"\b(?:ii|iii|iv|vi|vii|viii|ix)\b")
_TRAILING_ARTICLE = re.compile(
    r"^(?P<name>.*), (?P<article>the|a|an|les|la|le|l'|il|das|der|die|el)$", re.IGNORECASE)

Embed = Callable[[Sequence[str]], np.ndarray]


def item_year(item: Item) -> int | None:
    """The release year from ``attributes["year"]`` or a trailing "(1995)" in the title."""
    year = (item.attributes or {}).get("year")
    if isinstance(year, int) and not isinstance(year, bool):
        return year
    m = _YEAR.search(item.title)
    return int(m.group(1)) if m else None


def normalize(text: str, *, keep_article: bool = False) -> str:
    """The match key of a title or a user's mention of it (articles dropped unless ``keep_article``)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().strip()
    text = _YEAR.sub("", text)
    m = _TRAILING_ARTICLE.match(text)
    if m:
        text = f"{m['article']} {m['name']}"
    text = text.replace("&", " and ")
    text = _NON_WORD.sub(" ", text).strip()
    text = _ROMAN.sub(lambda m: _ROMAN_VALUES[m.group(0)], text)  # "Part II" and "2" compare equal
    return text if keep_article else _LEADING_ARTICLE.sub("", text)


def title_keys(title: str) -> list[str]:
    """Keys of a title, articles kept: the main title plus one per parenthesised alternative."""
    bare = _YEAR.sub("", title)
    keys = [normalize(_PAREN.sub("", bare), keep_article=True)]
    for alt in _PAREN.findall(bare):
        alt = _AKA.sub("", alt.strip())
        if len(alt) > 2:
            keys.append(normalize(alt, keep_article=True))
    return [k for k in dict.fromkeys(keys) if k]


def _numbers(text: str) -> set[str]:
    return set(_NUMBER.findall(text))


@dataclass(frozen=True)
class Match:
    item: Item
    score: float  # 0..100
    exact: int  # 2: the mention equals a title, 1: equal but for an article, 0: fuzzy


class CatalogueIndex:
    """The items the agent may recommend, searchable by (misspelt, partial) title."""

    def __init__(self, items: Sequence[Item], embed: Embed | None = None,
                 popularity: Mapping[str, float] | None = None) -> None:
        self.items: list[Item] = list(items)
        # Interaction counts (e.g. from the bundle's training data): "Titanic" means the 1997 one.
        self.popularity: dict[str, float] = dict(popularity or {})
        self.by_id: dict[str, Item] = {it.id: it for it in self.items}
        self.years: dict[str, int | None] = {it.id: item_year(it) for it in self.items}
        self.genres: dict[str, list[str]] = {it.id: item_genres(it) for it in self.items}
        self._full: list[str] = []  # keys with their article ("the heat")
        self._keys: list[str] = []  # the same without it ("heat"): what fuzzy matching compares
        self._owner: list[int] = []
        for i, it in enumerate(self.items):
            for key in title_keys(it.title):
                self._full.append(key)
                self._keys.append(_LEADING_ARTICLE.sub("", key))
                self._owner.append(i)
        self._position = {it.id: i for i, it in enumerate(self.items)}
        self._lengths = np.fromiter((len(k) for k in self._keys), dtype=np.int32, count=len(self._keys))
        self._by_length = np.argsort(-self._lengths, kind="stable")  # key positions, longest key first
        self._sorted_lengths = self._lengths[self._by_length]
        self._keys_by_length = [self._keys[i] for i in self._by_length]
        self._prefixes: dict[int, list[str]] = {}  # n -> every key (longest first) cut to n characters, built once
        self.genre_names = sorted({g for gs in self.genres.values() for g in gs})
        self._embed = embed
        self._vectors: np.ndarray | None = None

    @classmethod
    def from_bundle(cls, bundle: Any) -> CatalogueIndex:
        """The index over a fitted bundle's catalogue; its popularity counts break close ties."""
        pop = bundle.components.get("popularity")
        counts = None if pop is None else {it.id: float(c) for it, c in zip(bundle.space.items, pop.counts)}
        return cls(bundle.space.items, popularity=counts)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.by_id

    def search(self, mention: str, limit: int = 5, year: int | None = None) -> list[Match]:
        """Best matches for ``mention``, best first; one entry per item.

        The score is the edit-distance ratio, or, when the mention is shorter than the title
        (the user typed part of it: "Shawshank", "Star Wars"), 0.9 x the best partial
        alignment. Never the other way round, or the title "Go" would match "Godfahter".
        Numbers the user typed ("Terminator 2", "Part III") must appear in the title. A year
        the user gave breaks ties between remakes.
        """
        full = normalize(mention, keep_article=True)
        query = _LEADING_ARTICLE.sub("", full)
        if not query:
            return []
        # score_cutoff: a match under 50 is dropped below anyway, and the cutoff lets rapidfuzz skip most titles early
        scores = process.cdist([query], self._keys, scorer=fuzz.ratio, dtype=np.float32, score_cutoff=50)[0]
        if len(query) >= 7:  # a short word inside a long title is a coincidence, not a mention
            # Partial and prefix matches only count for titles longer than the mention: score just those
            # (keys are kept sorted by length, longest first, so they are a prefix of that order).
            m = int(np.searchsorted(-self._sorted_lengths, -len(query), side="left"))
            longer = self._keys_by_length[:m]
            partial = process.cdist([query], longer, scorer=fuzz.partial_ratio, dtype=np.float32, score_cutoff=55)[0]
            # The title's beginning, typo'd ("termintor 2" ~ "terminator 2: judgment day"): partial_ratio's
            # fixed-width windows miss a typo that shifts the length, a prefix comparison does not.
            prefix = np.zeros_like(partial)
            for n in (len(query), len(query) + 1, len(query) + 2):  # a typo changes the length by a letter or two
                cut = self._prefixes.get(n)
                if cut is None:
                    cut = self._prefixes[n] = [k[:n].rstrip() for k in self._keys_by_length]
                prefix = np.maximum(prefix, process.cdist([query], cut[:m], scorer=fuzz.ratio, dtype=np.float32,
                                                          score_cutoff=55)[0])
            rows = self._by_length[:m]
            scores[rows] = np.maximum(scores[rows], 0.9 * np.maximum(partial, prefix))
        top = np.argsort(-scores)[: max(limit * 8, 40)]
        wanted = _numbers(query)
        best: dict[int, Match] = {}
        for pos in top:
            score = float(scores[pos])
            if score < 50:
                break
            owner = self._owner[pos]
            item = self.items[owner]
            if wanted - _numbers(self._keys[pos]):
                score -= 10.0
            if year is not None and self.years[item.id] is not None:
                score += 5.0 if self.years[item.id] == year else -5.0
            exact = 2 if self._full[pos] == full else int(self._keys[pos] == query)
            if year is not None and exact and self.years[item.id] not in (year, None):
                exact = 0
            match = Match(item, min(max(score, 0.0), 100.0), exact)
            old = best.get(owner)
            if old is None or (match.exact, match.score) > (old.exact, old.score):
                best[owner] = match
        # Ties keep catalogue order (in MovieLens, lower ids are the older, better-known titles).
        ranked = sorted(best.values(), key=lambda m: (-m.exact, -m.score, self._position[m.item.id]))
        if not ranked and self._embed is not None:
            ranked = self.embedding_search(mention, limit)
        return ranked[:limit]

    def embedding_search(self, text: str, limit: int = 5) -> list[Match]:
        """Nearest titles by cosine similarity through the ``embed`` hook (score = 100 * cosine)."""
        if self._embed is None:
            return []
        if self._vectors is None:
            self._vectors = _unit(np.asarray(self._embed([it.title for it in self.items]), dtype=float))
        query = _unit(np.asarray(self._embed([text]), dtype=float))[0]
        sims = self._vectors @ query
        order = np.argsort(-sims)[:limit]
        return [Match(self.items[i], float(100.0 * max(sims[i], 0.0)), 0) for i in order]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
