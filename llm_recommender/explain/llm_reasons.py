"""LLM-phrased reasons, under structured output, each checked by the degenerate-output filter.

* ``reasons="llm"`` on a fused ranking (:func:`llm_evidence_reasons`): the prompt gives the model only the
  evidence (which component carried the item, the cited history items, the genres they share); the JSON
  schema limits the cited title to the evidence's own and caps the length.
* an LLM strategy's reasons (:func:`llm_request_reasons`): no evidence, so the model writes from the
  history alone, naming a related history item from the most recent ones (an enum in the schema).

Every reply then passes the filter (``degenerate.problem``): one that says nothing, repeats itself, is a
bare title, names a history item outside the evidence or a genre the item does not have is replaced by
the deterministic reason (the evidence text, or what the request itself shows) and recorded in
``fallbacks``. So the worst an LLM reason can be is the deterministic one. A :class:`~.gate.ReasonGate`
stops generating once the model's replies are mostly rejected.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends.base import Backend, Generation
from ..configurable import ComponentConfig
from ..data.movielens import natural_title
from ..data.words import MOVIE, ItemWords
from ..prompts import PromptRenderer
from ..protocol import Evidence, Fallback, Item, RankRequest, item_genres
from ..structured import ParseFailure, extract_json_object, parse_reason, reason_schema
from .degenerate import movie_words_off_movies, problem, strip_year
from .gate import ReasonGate
from .reasons import citations


class ReasonsConfig(ComponentConfig):
    """The LLM reasons' knobs (``Settings.reasons``; flat names ``reason_<field>``)."""

    settings_prefix = "reason_"
    max_chars: int = Field(default=200, ge=20)
    max_tokens: int = Field(default=60, ge=8)
    history_choices: int = Field(default=10, ge=1, description="recent history titles a reason may refer to")


log = logging.getLogger(__name__)

# What each component's evidence means, in words the prompt can state as fact.
FACTS = {
    "cooccurrence": "People who watched your movies often watched it too.",
    "itemknn": "People who watched your movies often watched it too.",
    "als": "It matches the taste your whole history shows.",
    "bpr": "It matches the taste your whole history shows.",
    "sequence": "It follows on naturally from what you watched most recently.",
    "embedding": "Its description reads much like your movies.",
    "representation": "The language model reads it as close to your movies.",
    "popularity": "It is widely watched by people with histories like yours.",
}


# One worked example per kind of evidence, shown for the fact that carried the item (its largest fusion term),
# in two forms: the cited history item was liked (rated >= 4) or only watched, as the item's own fact says.
def _example(movie: str, fact: str, title: str, liked: str, watched: str) -> dict[str, dict[str, Any]]:
    short = title.rsplit(" (", 1)[0]
    return {kind: {"movie": movie, "because": title, "facts": [fact, f'You {how} "{title}"{stars}.'],
                   "reason": reason.format(t=short)}
            for kind, how, stars, reason in (("liked", "rated", " 5 stars", liked), ("watched", "watched", "", watched))}


_CO = _example('"Toy Story 2 (1999)" (genres: Animation, Children, Comedy)', FACTS["cooccurrence"],
               "Finding Nemo (2003)", "You gave {t} 5 stars, and its fans often pick this one next.",
               "You watched {t}, and its fans often pick this one next.")
_TASTE = _example('"Heat (1995)" (genres: Action, Crime, Thriller)', FACTS["als"],
                  "Casino (1995)", "You gave {t} 5 stars, so this one should fit your taste.",
                  "Since you watched {t}, this one fits your taste.")
_TEXT = _example('"Aliens (1986)" (genres: Action, Horror, Sci-Fi)', FACTS["embedding"],
                 "Alien (1979)", "Its story reads much like {t}, which you rated 5 stars.",
                 "Its story reads much like {t}, which you watched.")
EXAMPLES = {
    "cooccurrence": _CO, "itemknn": _CO, "als": _TASTE, "bpr": _TASTE, "embedding": _TEXT, "representation": _TEXT,
    "sequence": _example('"Shrek (2001)" (genres: Adventure, Animation, Comedy)',
                         FACTS["sequence"], "Toy Story (1995)",
                         "It follows on nicely from {t}, which you rated 5 stars.",
                         "It follows on nicely from {t}, which you watched recently."),
    "popularity": _example('"Forrest Gump (1994)" (genres: Comedy, Drama, Romance)',
                           FACTS["popularity"], "Apollo 13 (1995)",
                           "Viewers who liked {t} as much as you did very often watch it as well.",
                           "Viewers who watched {t}, as you did, very often watch it as well."),
}
JSON_TOKENS = 24  # the reply's JSON keys and the cited title, on top of the reason's own token cap


def facts_for(item: Item, ev: Evidence) -> list[str]:
    ranked = sorted(ev.shares, key=lambda c: -ev.shares[c])
    facts = [FACTS[c] for c in ranked[:2] if c in FACTS and ev.shares[c] >= 0.15]
    if not ev.known_item:
        facts.insert(0, "It is new to the catalogue, so it was judged by its description.")
    shared = sorted({v for vals in ev.shared_attributes.values() for v in vals})
    if shared:
        facts.append("It shares these genres with your movies: " + ", ".join(shared).lower() + ".")
    return list(dict.fromkeys(facts)) or ["It scores well for this user."]


OPENERS = "|".join(["You gave", "You rated", "You watched", "You loved", "Since you watched", "Since you liked",
                     "Because you liked", "Its story reads much like", "It follows on nicely from",
                     "Viewers who watched", "Viewers who liked"])


def _schema(titles: list[str], max_chars: int) -> dict[str, Any]:
    """``because`` is the cited title; the reason must open by naming it exactly (a small model mangles titles
    it writes freely: "Back to Future", "MeaGirls"), then is free text to a full stop."""
    reason: dict[str, Any] = {"type": "string", "minLength": 12, "maxLength": max_chars}
    if titles:
        name = re.escape(strip_year(titles[0]))
        # Fixed openers (the examples' own) and no full stop before the end except in a rating ("4.5 stars"):
        # a free "[a-z]+" opener let the model run on for the whole budget, and an ambiguous tail made each
        # token's grammar mask several times slower.
        reason = {"type": "string", "pattern": rf"({OPENERS}) {name}([^\"\\\\.]|[0-9][.][0-9])*[.]"}
    props: dict[str, Any] = {"reason": reason}
    required = ["reason"]
    if titles:
        props = {"because": {"enum": titles}, **props}
        required = ["because", "reason"]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")
    because: str | None = None
    reason: str = Field(min_length=1)


Judge = Callable[[int, str, list[str]], tuple[str, str | None]]  # (item, reply, reasons so far) -> (text, defect)


def _gated(items: Sequence[Item], gate: ReasonGate, fallback: Sequence[Any],
           generate: Callable[[range], list[Generation]], judge: Judge) -> tuple[list[Any], list[Fallback]]:
    """Generate in two chunks (the gate's probe, then the rest: once the gate is off, nothing more is paid
    for), judge each reply; a rejected one gives way to ``fallback[k]`` (the deterministic reason), and
    the rejections are one fallback record."""
    out: list[Any] = []
    failures: list[str] = []
    probe = min(gate.PROBE, len(items))
    for chunk in (range(0, probe), range(probe, len(items))):
        if not len(chunk):
            continue
        if gate.off:
            out += [fallback[k] for k in chunk]
            continue
        for k, gen in zip(chunk, generate(chunk)):
            text, why = judge(k, gen.text, out)
            gate.record(why is not None)
            out.append(fallback[k] if why else text)
            if why:
                failures.append(f"{items[k].id}: {why}")
                log.debug("reason for %s rejected (%s): %r", items[k].id, why, text)
    return out, [Fallback(stage="reason", reason="; ".join(failures)[:500], attempts=1, used="evidence")] if failures else []


def llm_evidence_reasons(backend: Backend, renderer: PromptRenderer, config: ReasonsConfig, request: RankRequest,
                         items: list[Item], evidence: list[Evidence], known_genres: list[str], *,
                         fallback_texts: list[str], gate: ReasonGate,
                         words: ItemWords = MOVIE) -> tuple[list[str], list[Fallback]]:
    """One reason per item, phrased by the LLM from its evidence, or ``fallback_texts``' (the evidence text)
    where the LLM's fails. ``gate`` (kept per model by the caller) stops generating once most are rejected."""
    if not items or gate.off:
        return list(fallback_texts), []
    by_id = {h.id: h for h in request.history}
    # the same citation as the evidence text
    cited = [[by_id[c.id]] if c is not None and c.id in by_id else [] for c, _ in citations(evidence)]
    prompts = [_evidence_prompt(renderer, item, ev, h) for item, ev, h in zip(items, evidence, cited)]
    schemas = [_schema([natural_title(h.title) for h in hs], config.max_chars) for hs in cited]
    max_tokens = config.max_tokens + JSON_TOKENS

    def generate(chunk: range) -> list[Generation]:
        if not backend.supports_json_schema:
            return backend.generate([prompts[k] for k in chunk], max_tokens=max_tokens)
        # each item has its own enum of titles
        return [g for k in chunk for g in backend.generate([prompts[k]], max_tokens=max_tokens, json_schema=schemas[k])]

    history_titles = [h.title for h in request.history]
    titles = [*history_titles, *map(natural_title, history_titles)]

    def judge(k: int, reply: str, so_far: list[str]) -> tuple[str, str | None]:
        item, ev = items[k], evidence[k]
        try:
            text = " ".join(_Reply.model_validate(extract_json_object(reply)).reason.split())
        except (ParseFailure, ValidationError):
            return "", "not valid JSON"
        allowed = [e.title for e in ev.history_items]
        why = problem(text, titles=titles, allowed_titles=[*allowed, *map(natural_title, allowed)],
                      item_title=natural_title(item.title), item_genres=item_genres(item), known_genres=known_genres,
                      must_name=natural_title(cited[k][0].title) if cited[k] else None,
                      ratings=[e.rating for e in ev.history_items if e.rating is not None and e.rating >= 4])
        if why is None and any(e.stated for e in ev.history_items) and _CONSUMED.search(text):
            why = "says the user consumed or rated an item they only said they liked"
        if why is None and movie_words_off_movies(text, words):
            why = "movie words on a catalogue of " + words.plural
        if why is None and text in so_far:
            why = "same as an earlier reason in this response"
        return text, why

    return _gated(items, gate, fallback_texts, generate, judge)


_CONSUMED = re.compile(r"\b(watched|rated|gave|bought|read)\b", re.IGNORECASE)


def _evidence_prompt(renderer: PromptRenderer, item: Item, ev: Evidence, cited: list[Any]) -> str:
    top = max(ev.shares, key=lambda c: ev.shares[c], default="")
    liked = cited and cited[0].rating is not None and cited[0].rating >= 4
    return renderer.chat(
        "reason_llm.j2", candidate=renderer.item_view(item.model_copy(update={"title": natural_title(item.title)})),
        facts=facts_for(item, ev), example=EXAMPLES.get(top, _TASTE)["liked" if liked else "watched"],
        cited=[renderer.item_view(h.model_copy(update={"title": natural_title(h.title)})) for h in cited])


def llm_request_reasons(backend: Backend, renderer: PromptRenderer, config: ReasonsConfig, request: RankRequest,
                        items: list[Item], known_genres: list[str], *, fallback_texts: list[str],
                        gate: ReasonGate) -> tuple[list[str], list[Fallback]]:
    """Reasons from the history alone (no evidence: an LLM strategy). A reply that does not parse, or that the
    filter rejects, gets ``fallback_texts``' reason for that item (what the request itself shows)."""
    if not items or gate.off:
        return list(fallback_texts), []
    history = renderer.history_views(request.history)
    history_titles = [h.title for h in request.history]
    recent_titles = [h.title for h in renderer.chronological(request.history)][-config.history_choices :]
    schema = reason_schema(config.max_chars, recent_titles) if backend.supports_json_schema else None

    def generate(chunk: range) -> list[Generation]:
        prompts = [renderer.fit("reason.j2", history, extra_tokens=config.max_tokens,
                                candidate=renderer.item_view(items[k])).text for k in chunk]
        return backend.generate(prompts, max_tokens=config.max_tokens, json_schema=schema)

    def judge(k: int, reply: str, _: list[str]) -> tuple[str, str | None]:
        item = items[k]
        try:
            text = parse_reason(reply, config.max_chars, recent_titles)
        except ParseFailure as exc:
            return "", exc.message
        said = text.split(": ", 1)[1] if text.startswith("Like ") and ": " in text else text
        return text, problem(said, titles=[*history_titles, item.title], allowed_titles=[*recent_titles, item.title],
                             item_genres=item_genres(item), known_genres=known_genres)

    return _gated(items, gate, fallback_texts, generate, judge)
