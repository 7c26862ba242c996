"""Reject LLM reasons that say nothing, or say something false.

Small models phrase reasons badly in recognisable ways (all seen from SmolLM2-135M on main):

* template-speak: "The user may like the recommended item more than the item most similar to it."
* repetition or a sentence cut off: "...the recommended item most similar to the recommended item is"
* a bare title: "The Godfather (1972)"
* a fact that is false for the item: "a classic example of a classic horror movie" about a comedy
* a history item that is not in the item's evidence

``problem(...)`` names the first such defect, or returns ``None`` for a usable reason. It is a
filter over text, not a proof of truth: it checks what can be checked against the evidence
(titles, genres) and the shape of the sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_WORD = re.compile(r"[a-z][a-z'\-]*")
STOPWORDS = frozenset(
    ["a", "an", "the", "of", "to", "and", "or", "in", "on", "at", "for", "with", "by", "from", "as", "it", "its", "this", "that", "these", "those", "is", "are", "was", "were", "be", "been", "you", "your", "i", "me", "my", "we", "our", "they", "them", "their", "he", "she", "his", "her", "so", "too", "also", "very", "more", "most", "than", "then"])
# Words that make a sentence a sentence. A lexicon, not a parser: enough for one-sentence reasons.
VERBS = frozenset(
    ["is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did", "can", "could", "may", "might", "will", "would", "should", "shall", "must", "like", "likes", "liked", "love", "loves", "loved", "enjoy", "enjoys", "enjoyed", "watch", "watches", "watched", "see", "sees", "saw", "seen", "rate", "rates", "rated", "share", "shares", "shared", "follow", "follows", "followed", "fit", "fits", "fitted", "suit", "suits", "match", "matches", "matched", "feel", "feels", "felt", "offer", "offers", "combine", "combines", "bring", "brings", "make", "makes", "made", "keep", "keeps", "give", "gives", "tell", "tells", "told", "set", "sets", "star", "stars", "starring", "feature", "features", "mix", "mixes", "want", "wants", "find", "finds", "appeal", "appeals", "appealed", "resemble", "resembles", "recall", "recalls", "echo", "echoes", "continue", "continues"])
# Words a finished sentence does not end on ("...most similar to the recommended item is").
DANGLING = frozenset(["a", "an", "the", "of", "to", "and", "or", "in", "on", "at", "for", "with", "by", "from", "as", "is", "are", "was", "were", "be", "than", "that", "this", "its", "your", "my", "our", "their", "his", "her"])
META = ("the user", "the movie", "the viewer", "the recommended item", "recommended item", "the item", "history item", "the candidate")
TERMINAL = (".", "!", "?", "…")


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def strip_year(title: str) -> str:
    return re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()


def _forms(title: str) -> set[str]:
    """A title's match keys: normalised, with and without its year."""
    return {_norm(title), _norm(strip_year(title))}


def _genre_forms(genre: str) -> set[str]:
    g = genre.lower()
    forms = {g}
    if g.endswith("y"):
        forms.add(g[:-1] + "ies")  # comedy -> comedies
    forms.add(g + "s")
    return forms


def problem(text: str, *, titles: Iterable[str] = (), allowed_titles: Iterable[str] = (),
            item_genres: Iterable[str] = (), known_genres: Iterable[str] = (), item_title: str | None = None,
            must_name: str | None = None, ratings: Iterable[float] = ()) -> str | None:
    """The first defect of ``text`` as a reason, or ``None``.

    ``titles``: every title the text could name (the history, the item); ``allowed_titles``: those it
    may name (the item's evidence, the item itself); ``item_genres``: the item's genre values;
    ``known_genres``: the catalogue's genre vocabulary, to spot a genre the item does not have;
    ``item_title``: the recommended item's own title, which a reason must not present as history;
    ``must_name``: the history title the reason was asked to cite (mangled or swapped titles fail);
    ``ratings``: the star ratings the reason may state (an invented "2 stars" fails).
    """
    stripped = " ".join(text.split())
    norm = _norm(stripped)
    content = norm  # the words, titles removed (naming one is fine: its words do not count as repetition or genre)
    for t in titles:
        for form in _forms(t):
            if form:
                content = re.sub(rf"(?<![a-z'\-]){re.escape(form)}(?![a-z'\-])", " ", content)
    return (_form_problem(stripped, norm, content.split(), titles)
            or _fact_problem(stripped, norm, content, titles=titles, allowed_titles=allowed_titles,
                             item_genres=item_genres, known_genres=known_genres, item_title=item_title,
                             must_name=must_name, ratings=ratings))


def _form_problem(stripped: str, norm: str, seq: list[str], titles: Iterable[str]) -> str | None:
    """Is it a sentence at all: not a bare title, not template-speak, no repetition, one finished sentence."""
    if any(norm in _forms(t) for t in titles):  # a bare title, with a little punctuation or a year around it
        return "bare title"
    if len(norm.split()) < 4:
        return "too short"
    lowered = stripped.lower()
    for phrase in META:
        if re.search(rf"\b{re.escape(phrase)}\b", lowered):
            return f"template-speak ({phrase!r})"
    # Repetition: a bigram with a content word, said twice.
    seen: set[tuple[str, str]] = set()
    for a, b in zip(seq, seq[1:]):
        if a in STOPWORDS and b in STOPWORDS:
            continue
        if (a, b) in seen:
            return f"repetition ({a} {b!s})"
        seen.add((a, b))
    for w in set(seq):
        if w not in STOPWORDS and w not in VERBS and len(w) > 4 and seq.count(w) >= 2:
            return f"repetition ({w!r})"
    untitled = stripped  # "Hot Shots! Part Deux" is one title, not two sentences
    for form in sorted({f for t in titles for f in (t, strip_year(t))}, key=len, reverse=True):
        untitled = re.sub(re.escape(form), "TITLE", untitled, flags=re.IGNORECASE)
    if re.search(r"[a-z]{2}[.!?]\s+[A-Z]", untitled):
        return "more than one sentence"
    if not any(w in VERBS or (len(w) > 4 and w.endswith(("ed", "ing"))) for w in seq):
        return "no verb"
    if not stripped.endswith(TERMINAL) or (seq and seq[-1] in DANGLING):
        return "cut off"
    return None


def _fact_problem(stripped: str, norm: str, content: str, *, titles: Iterable[str], allowed_titles: Iterable[str],
                  item_genres: Iterable[str], known_genres: Iterable[str], item_title: str | None,
                  must_name: str | None, ratings: Iterable[float]) -> str | None:
    """Does it say only what the evidence holds: the title asked for, given ratings, evidence titles, the item's genres."""
    if must_name:
        forms = _forms(must_name)
        forms |= {re.sub(r"^(the|a|an) ", "", f) for f in forms}
        if not any(f and re.search(rf"\b{re.escape(f)}\b", norm) for f in forms):
            return f"does not name {must_name!r} as asked"
    stated = {float(x) for x in re.findall(r"(\d+(?:\.\d+)?)[ -]?(?:★|stars?\b)", stripped)}
    if stated - {float(r) for r in ratings}:
        return "states a rating the user did not give"
    allowed = {f for t in allowed_titles for f in _forms(t)}
    if item_title:
        own = {f for f in _forms(item_title) if len(f) >= 4} - allowed
        if any(re.search(rf"\b{re.escape(f)}\b", norm) for f in own):
            return "names the recommended item as if it were in the history"
    for t in titles:
        for form in _forms(t):
            if len(form) >= 4 and re.search(rf"\b{re.escape(form)}\b", norm) and form not in allowed:
                return f"cites {t!r}, not in the evidence"
    mine = {f for g in item_genres for f in _genre_forms(g)}
    for genre in known_genres:
        for form in _genre_forms(genre):
            if form not in mine and re.search(rf"\b{re.escape(form)}\b", content):  # titles removed
                return f"names {genre!r}, not a genre of the item"
    return None


_MOVIE_WORDS = re.compile(r"\b(watch(es|ed|ing)?|viewers?|movies?|films?)\b", re.IGNORECASE)


def movie_words_off_movies(text: str, words: Any) -> bool:
    """Does ``text`` speak of watching, viewers or movies about a catalogue that is not movies?"""
    return getattr(words, "noun", "item") != "movie" and bool(_MOVIE_WORDS.search(text))
