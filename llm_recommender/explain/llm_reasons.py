"""``reasons="llm"`` on a fused ranking: the LLM phrases each item's evidence, under structured output.

The prompt gives the model only the evidence (which component carried the item, the cited history
items, the genres they share); the JSON schema limits the cited title to the evidence's own and caps
the length. Every reply then passes the degenerate-output filter (``degenerate.problem``): one that
says nothing, repeats itself, is a bare title, names a history item outside the evidence or a genre
the item does not have is replaced by the evidence text (``reasons="evidence"``) and recorded in
``fallbacks``. So the worst an LLM reason can be is the deterministic one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..data.movielens import natural_title
from ..data.words import MOVIE, ItemWords
from ..protocol import Evidence, Fallback, Item, RankRequest, item_genres
from ..structured import ParseFailure, extract_json_object
from .degenerate import movie_words_off_movies, problem, strip_year
from .reasons import citations, evidence_reasons

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


class ReasonGate:
    """Whether LLM reasons are worth paying for with this model: the filter's rejection rate, measured on use.

    The first ``PROBE`` replies (on first use) decide: if ``MAX_REJECTED`` of them or more are rejected, the
    model's reasons are turned off and every later item gets the evidence reason up front, without a
    generation; a request never spends more than the probe on text thrown away. After the probe the rate is
    kept up to date and turns them off the same way (over at least ``PROBE`` replies)."""

    PROBE = 3
    MAX_REJECTED_RATE = 0.5

    def __init__(self, path: Path | None = None) -> None:
        self.asked = 0
        self.rejected = 0
        self.off = False
        self.logged = False
        self.path = path  # where the verdict is kept across processes (one CLI call each), if anywhere
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                self.asked, self.rejected = int(data["asked"]), int(data["rejected"])
                self.off = bool(data["off"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an unreadable verdict is measured again

    @classmethod
    def for_model(cls, model: str) -> ReasonGate:
        """The gate of ``model``, its verdict cached under the cache folder (``LLM_REC_CACHE_DIR``)."""
        from ..model_store import cache_dir

        key = hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
        return cls(cache_dir() / "reason_gate" / f"{key}.json")

    def record(self, rejected: bool) -> None:
        self.asked += 1
        self.rejected += int(rejected)
        if self.asked >= self.PROBE and self.rejected / self.asked >= self.MAX_REJECTED_RATE:
            self.off = True
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"asked": self.asked, "rejected": self.rejected, "off": self.off}))
        except OSError:
            log.debug("could not keep the reason gate's verdict in %s", self.path)

    def note(self, model: str) -> str:
        return (f"LLM reasons are off for model {model!r}: the reason filter rejected {self.rejected} of its first "
                f"{self.asked} replies, so these reasons are the evidence text, without generating")

    def warn_once(self, model: str) -> None:
        if not self.logged:
            self.logged = True
            log.warning(self.note(model))


def llm_evidence_reasons(backend: Any, renderer: Any, config: Any, request: RankRequest, items: list[Item],
                         evidence: list[Evidence], known_genres: list[str], *, fallback_texts: list[str] | None = None,
                         gate: ReasonGate | None = None, words: ItemWords = MOVIE) -> tuple[list[str], list[Fallback]]:
    """One reason per item, phrased by the LLM from its evidence, or the evidence text where the LLM's fails.

    ``gate`` (kept per model by the caller) stops generating once the model's replies are mostly rejected."""
    fallback_texts = fallback_texts if fallback_texts is not None else evidence_reasons(
        items, evidence, renderer.config.template_dir)
    gate = gate or ReasonGate()
    if not items or gate.off:
        return list(fallback_texts), []
    history_titles = [h.title for h in request.history]
    by_id = {h.id: h for h in request.history}
    prompts, allowed, schemas, asked = [], [], [], []
    for item, ev, (choice, _) in zip(items, evidence, citations(evidence)):  # the same citation as the evidence text
        cited = [by_id[choice.id]] if choice is not None and choice.id in by_id else []
        allowed.append([e.title for e in ev.history_items])
        top = max(ev.shares, key=lambda c: ev.shares[c], default="")
        prompts.append(renderer.chat(
            "reason_llm.j2", candidate=renderer.item_view(item.model_copy(update={"title": natural_title(item.title)})),
            facts=facts_for(item, ev), example=EXAMPLES.get(top, _TASTE)[
                "liked" if cited and cited[0].rating is not None and cited[0].rating >= 4 else "watched"],
            cited=[renderer.item_view(h.model_copy(update={"title": natural_title(h.title)})) for h in cited]))
        asked.append(natural_title(cited[0].title) if cited else None)
        schemas.append(_schema([natural_title(h.title) for h in cited], config.max_chars))
    texts: list[str] = []
    failures: list[str] = []
    chunks = [range(0, min(gate.PROBE, len(items))), range(min(gate.PROBE, len(items)), len(items))]
    for chunk in chunks:
        if not len(chunk):
            continue
        if gate.off:  # the probe said this model's reasons are thrown away: do not pay for the rest
            texts += [fallback_texts[k] for k in chunk]
            continue
        generations = []
        if backend.supports_json_schema:
            for k in chunk:  # each item has its own enum of titles
                generations += backend.generate([prompts[k]], max_tokens=config.max_tokens + JSON_TOKENS, json_schema=schemas[k])
        else:
            generations = backend.generate([prompts[k] for k in chunk], max_tokens=config.max_tokens + JSON_TOKENS)
        for k, gen in zip(chunk, generations):
            item, ev, ok_titles, name = items[k], evidence[k], allowed[k], asked[k]
            why = None
            try:
                reply = _Reply.model_validate(extract_json_object(gen.text))
                text = " ".join(reply.reason.split())
            except (ParseFailure, ValidationError):
                text, why = "", "not valid JSON"
            if why is None:
                why = problem(text, titles=[*history_titles, *map(natural_title, history_titles)],
                              allowed_titles=[*ok_titles, *map(natural_title, ok_titles)], item_title=natural_title(item.title),
                              item_genres=item_genres(item), known_genres=known_genres, must_name=name,
                              ratings=[e.rating for e in ev.history_items if e.rating is not None and e.rating >= 4])
            stated = any(e.stated for e in ev.history_items)
            if why is None and stated and re.search(r"\b(watched|rated|gave|bought|read)\b", text, re.IGNORECASE):
                why = "says the user consumed or rated an item they only said they liked"
            if why is None and movie_words_off_movies(text, words):
                why = "movie words on a catalogue of " + words.plural
            if why is None and text in texts:
                why = "same as an earlier reason in this response"
            gate.record(why is not None)
            if why is None:
                texts.append(text)
            else:
                texts.append(fallback_texts[k])
                failures.append(f"{item.id}: {why}")
                log.debug("reason for %s rejected (%s): %r", item.id, why, text)
    fallbacks = [Fallback(stage="reason", reason="; ".join(failures)[:500], attempts=1, used="evidence")] if failures else []
    return texts, fallbacks
