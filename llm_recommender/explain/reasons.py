"""``reasons="evidence"``: a sentence per item rendered from its evidence with ``prompts/reason_evidence.j2``.

Deterministic, fast (no LLM) and grounded. What a reason may say, and when:

* the **lead** names what carried the item: the component with the largest positive fusion term, if that
  term is clearly positive (``LEAD_MIN`` logits). The sequence model's "it follows on from what you watched
  most recently" only when its term is the largest and at least ``RECENCY_MIN``, and the history is an
  ordered record of what the user consumed (every entry has a timestamp, not only likes stated in chat);
  otherwise the next true lead, or none;
* the **cited** history item (from a component the fusion kept) is said as the user gave it: "you rated
  Alien (1979) 5★" only for a rating of 4 or more the request carries, "you said you liked Alien" for a like
  stated in chat, else "you watched Alien";
* the **words** are the dataset's (``ItemWords``: watched/viewers for movies, bought/buyers for products,
  the neutral "interacted with" when the bundle does not say);
* a **low-probability** item (P below ``LOW_P_FLOOR``, or below ``LOW_P_RATIO`` of the list's top item)
  is hedged: "A weaker match: ...";
* reasons in one response differ: a history item cited again, or a sentence said already, is said with the
  recommended item's own title.

An item the bundle has never seen says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.movielens import natural_title
from ..data.words import NEUTRAL, ItemWords
from ..prompts import template_environment
from ..protocol import Evidence, EvidenceItem, HistoryEntry, Item
from .evidence import attribute_values

TEMPLATE = "reason_evidence.j2"
LEAD_MIN = 0.1  # logits: a fusion term below this moved the item too little to be named as its reason
RECENCY_MIN = 0.5  # logits: the sequence model's term must be this large (and the largest) to claim "follows on"
LOW_P_FLOOR = 0.01  # an item under this probability is a weak match whatever the list
LOW_P_RATIO = 0.1  # ... and so is one under a tenth of the list's top item
HEDGE = "A weaker match"
CO_OCCURRENCE = ("cooccurrence", "itemknn")
TASTE = ("als", "bpr")


def is_low(probability: float | None, top_probability: float | None) -> bool:
    """Is this item a weak match for the list (its reason is hedged)?"""
    if probability is None:
        return False
    return probability < LOW_P_FLOOR or (top_probability is not None and probability < LOW_P_RATIO * top_probability)


def ordered_history(history: Sequence[HistoryEntry]) -> bool:
    """A record of consumption in time order: every entry timestamped, and not only likes stated in chat."""
    return bool(history) and all(h.timestamp is not None for h in history) and not all(h.stated for h in history)


def lead_of(evidence: Evidence, recency_ok: bool) -> str:
    """The component whose (clearly positive) fusion term carried the item, or ``""``: see the module doc."""
    terms = sorted(evidence.contributions.items(), key=lambda kv: -kv[1])
    for rank, (name, value) in enumerate(terms):
        if value < LEAD_MIN:
            break
        if name == "sequence" and not (recency_ok and rank == 0 and value >= RECENCY_MIN):
            continue
        return name
    return ""


def recency_is_real(evidence: Evidence, history: Sequence[HistoryEntry]) -> bool:
    """The audit's test for the recency phrase (the same rule :func:`lead_of` applies)."""
    return lead_of(evidence, ordered_history(history)) == "sequence"


def citations(evidence: list[Evidence]) -> list[tuple[EvidenceItem | None, bool]]:
    """Per item of a response, the history item its reason cites (where it can, one no earlier reason
    cited, so reasons differ) and whether an earlier reason already cited it."""
    used: set[str] = set()
    out: list[tuple[EvidenceItem | None, bool]] = []
    for ev in evidence:
        fresh = [e for e in ev.history_items if e.id not in used]
        cited = (fresh or ev.history_items or [None])[0]
        out.append((cited, cited is not None and cited.id in used))
        if cited is not None:
            used.add(cited.id)
    return out


def evidence_reasons(items: list[Item], evidence: list[Evidence], template_dir: Path | None = None, *,
                     words: ItemWords = NEUTRAL, history: Sequence[HistoryEntry] = (),
                     probabilities: Sequence[float] | None = None) -> list[str]:
    """One reason per item; a repeated citation or sentence is said with the recommended item's name."""
    recency_ok = ordered_history(history)
    top_p = max(probabilities) if probabilities else None
    out: list[str] = []
    for n, (item, ev, (cited, repeat)) in enumerate(zip(items, evidence, citations(evidence))):
        hedge = is_low(probabilities[n], top_p) if probabilities else False
        kw: dict[str, Any] = {"cited": cited, "words": words, "history": history, "recency_ok": recency_ok, "hedge": hedge}
        text = evidence_reason(item, ev, template_dir, name_item=repeat, **kw)
        if text in out:
            text = evidence_reason(item, ev, template_dir, name_item=True, **kw)
        out.append(text)
    return out


def _you(cited: EvidenceItem, words: ItemWords) -> str:
    if cited.stated:
        return f"you said you liked {cited.title}"
    if cited.rating is not None and cited.rating >= 4:
        return f"you rated {cited.title} {cited.rating:g}★"
    return f"you {words.verb} {cited.title}"


def _history_genres(item: Item, history: Sequence[HistoryEntry], words: ItemWords) -> str:
    """The attribute value the item shares with most history items, worded ("drama, like 12 of the movies in
    your history", or with the one history item's title), or ``""``."""
    mine = {v for vals in attribute_values(item).values() for v in vals}
    counts: Counter[str] = Counter()
    first: dict[str, HistoryEntry] = {}
    for h in history:
        for v in sorted({v for vals in attribute_values(h).values() for v in vals} & mine):
            counts[v] += 1
            first.setdefault(v, h)
    if not counts:
        return ""
    value, n = counts.most_common(1)[0]
    like = natural_title(first[value].title) if n == 1 else f"{n} of the {words.plural} in your history"
    return f"{value.lower()}, like {like}"


def evidence_reason(item: Item, evidence: Evidence, template_dir: Path | None = None, cited: Any = None,
                    name_item: bool = False, *, words: ItemWords = NEUTRAL, history: Sequence[HistoryEntry] = (),
                    recency_ok: bool = False, hedge: bool = False) -> str:
    w = words
    lead = lead_of(evidence, recency_ok)
    cited = cited if cited is not None else (evidence.history_items[0] if evidence.history_items else None)
    if cited is not None:  # "The Godfather (1972)", not the file's "Godfather, The (1972)"
        cited = cited.model_copy(update={"title": natural_title(cited.title)})
    title = natural_title(item.title)
    it, this = (title, title) if name_item else ("it", "this")
    leads = {
        **dict.fromkeys(CO_OCCURRENCE, f"{w.people} who {w.verb} your {w.plural} often {w.verb} {this} too"),
        **dict.fromkeys(TASTE, f"{it} fits the taste your history shows"),
        "sequence": f"{it} follows on from what you {w.verb} most recently",
        "embedding": f"{it} is described much like your {w.plural}",
        "representation": f"the language model reads {this} as close to your {w.plural}",
        "popularity": f"{it} is widely {w.verb}",
    }
    links = {  # what ties the cited history item to this one, by the component that cited it
        **dict.fromkeys(CO_OCCURRENCE, f"{w.people} who {w.verb} it often {w.verb} {this} too"),
        "embedding": f"{'this one' if this == 'this' else this} is described in much the same words",
        "representation": "the language model reads the two as alike",
    }
    genres = (cited.shared if cited is not None else sorted({v for vs in evidence.shared_attributes.values() for v in vs}))[:3]
    common = "" if cited is not None or genres else _history_genres(item, history, w)
    text = template_environment(str(template_dir) if template_dir else None).get_template(TEMPLATE).render(
        item=item, evidence=evidence, words=w, hedge=HEDGE if hedge else "", title=title, it=it,
        lead=leads.get(lead, ""), same=cited is not None and (lead == cited.component or (lead in CO_OCCURRENCE and cited.component in CO_OCCURRENCE)),
        cited=cited, you=_you(cited, w) if cited is not None else "", link=links.get(cited.component, "") if cited is not None else "",
        genres=[g.lower() for g in genres], common=common)
    return " ".join(text.split())


# ---- no bundle: the evidence a request itself holds ---------------------------------------------

_STOP = frozenset(["a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "with", "by", "from", "is", "are", "was", "were", "it", "its", "this", "that", "your", "you", "my", "i", "me", "be", "as", "not", "no", "new", "vol", "part", "edition"])


def _tokens(item: Item) -> set[str]:
    text = " ".join([natural_title(item.title), item.description or ""]).lower()
    text = re.sub(r"\(\d{4}\)", " ", text)
    return {t for t in re.findall(r"[a-z][a-z'\-]{2,}", text) if t not in _STOP}


def request_reasons(items: list[Item], history: Sequence[HistoryEntry], words: ItemWords = NEUTRAL,
                    probabilities: Sequence[float] | None = None) -> list[str]:
    """Reasons without a bundle (zero-shot LLM strategies): what the request itself shows about each item.

    An attribute value (genre, brand, ...) it shares with history items, or the words of its title and
    description it shares with one history item; where neither exists, the reason says so plainly: the
    language model ranked it and nothing in the request ties it to the history."""
    top_p = max(probabilities) if probabilities else None
    out: list[str] = []
    used: set[str] = set()
    for n, item in enumerate(items):
        title = natural_title(item.title)
        mine = attribute_values(item)
        best: tuple[int, HistoryEntry, list[str]] | None = None
        for h in history:
            shared = sorted({v for k, vals in attribute_values(h).items() for v in vals & mine.get(k, set())})
            if shared and (best is None or (len(shared), h.id not in used) > (best[0], best[1].id not in used)):
                best = (len(shared), h, shared)
        if best is not None:
            h = best[1]
            used.add(h.id)
            text = (f"It shares {', '.join(g.lower() for g in best[2][:3])} with {natural_title(h.title)}, "
                    f"which {_which(h, words)}.")
        else:
            overlap = [(sorted(_tokens(item) & _tokens(h)), h) for h in history]
            overlap = [(o, h) for o, h in overlap if o]
            if overlap:
                o, h = max(overlap, key=lambda x: (len(x[0]), x[1].id not in used))
                used.add(h.id)
                text = f"Its title or description shares words with {natural_title(h.title)}: {', '.join(o[:3])}."
            else:
                text = (f"The language model ranked {title} here; it shares no {_attr_word(item, history)} or title "
                        "words with your history, so there is no more specific reason to give.")
        if probabilities and is_low(probabilities[n], top_p):
            text = f"{HEDGE}: {text[0].lower()}{text[1:]}"
        if text in out:
            text = text[:-1] + f" ({title})."
        out.append(text)
    return out


def _attr_word(item: Item, history: Sequence[HistoryEntry]) -> str:
    keys = {k for it in [item, *history] for k in (it.attributes or {})}
    return "genre" if "genres" in keys or not keys else "attribute"


def _which(h: HistoryEntry, words: ItemWords) -> str:
    if h.stated:
        return "you said you liked"
    if h.rating is not None and h.rating >= 4:
        return f"you rated {h.rating:g}★"
    return f"you {words.verb}"
