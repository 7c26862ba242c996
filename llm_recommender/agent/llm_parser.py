"""The optional LLM parser: the model fills a typed intent through structured output.

The model only reads and extracts; linking titles to catalogue ids, genre names and all
caps stay deterministic, so a model that invents a title or a genre changes nothing it
should not. Output that fails validation falls back to the deterministic parser, and the
intent then records ``parser: "deterministic"`` with a note saying why.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..backends.base import Backend
from ..prompts import PromptRenderer, quote_untrusted
from ..structured import ParseFailure, extract_json_object
from .catalogue import CatalogueIndex
from .intent import MAX_GENRES, MAX_K, MAX_MENTIONS, Constraints, Intent, Mention
from .parser import LINK_THRESHOLD, MAX_TEXT_CHARS, DeterministicParser, ParseContext

Pol = Literal["liked", "disliked", "seen"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMMention(_Strict):
    title: str = Field(min_length=1, max_length=200)
    polarity: Pol = "liked"


class LLMReference(_Strict):
    position: int = Field(ge=1, le=MAX_K)
    polarity: Pol = "liked"


class LLMIntent(_Strict):
    """The contract with the model (its JSON schema constrains decoding)."""

    mentions: list[LLMMention] = Field(default_factory=list, max_length=MAX_MENTIONS)
    references: list[LLMReference] = Field(default_factory=list, max_length=MAX_K)
    include_genres: list[str] = Field(default_factory=list, max_length=MAX_GENRES)
    exclude_genres: list[str] = Field(default_factory=list, max_length=MAX_GENRES)
    year_min: int | None = Field(default=None, ge=1800, le=2100)
    year_max: int | None = Field(default=None, ge=1800, le=2100)
    relative_year: Literal["older", "newer"] | None = None
    count: int | None = Field(default=None, ge=1, le=MAX_K)
    off_topic: bool = False


class LLMParser:
    name = "llm"

    def __init__(self, catalogue: CatalogueIndex, backend: Backend, *, max_tokens: int = 256) -> None:
        self.catalogue = catalogue
        self.backend = backend
        self.max_tokens = max_tokens
        self.fallback = DeterministicParser(catalogue)
        self.renderer = PromptRenderer(backend)
        self.schema = LLMIntent.model_json_schema()

    def parse(self, text: str, context: ParseContext | None = None) -> Intent:
        context = context or ParseContext()
        if context.pending is not None:  # "the first one": no model needed to read an answer to our question
            resolved = self.fallback.resolve_clarification(text, context.pending)
            if resolved is not None:
                return self.fallback.parse(text, context)
        previous = [quote_untrusted(self.catalogue.by_id[i].title, 200)[0] for i in context.previous_ids]
        prompt = self.renderer.chat("agent_intent.j2", message=quote_untrusted(text, MAX_TEXT_CHARS)[0],
                                    previous=previous)
        raw = self.backend.generate([prompt], max_tokens=self.max_tokens, json_schema=self.schema)[0].text
        try:
            out = LLMIntent.model_validate(extract_json_object(raw))
        except (ParseFailure, ValidationError) as exc:
            intent = self.fallback.parse(text, context)
            intent.notes.append(f"llm parser output invalid ({type(exc).__name__}); deterministic parser used")
            return intent
        return self._intent(out, context)

    def _intent(self, out: LLMIntent, context: ParseContext) -> Intent:
        notes: list[str] = []
        mentions: list[Mention] = []
        for m in out.mentions:
            linked = self.fallback.link(m.title, m.polarity, LINK_THRESHOLD)
            if linked is None:
                notes.append(f"no catalogue item matches {m.title[:80]!r}")
            else:
                mentions.append(linked)
        for r in out.references:
            if r.position <= len(context.previous_ids):
                mentions.append(self.fallback._reference(context.previous_ids[r.position - 1], r.polarity,
                                                         f"#{r.position}"))
        known = {g.lower(): g for g in self.catalogue.genre_names}

        def genres(names: list[str]) -> list[str]:
            kept = [known[n.lower()] for n in names if n.lower() in known]
            if len(kept) < len(names):
                notes.append("unknown genre names from the llm parser were dropped")
            return list(dict.fromkeys(kept))

        constraints = Constraints(include_genres=genres(out.include_genres), exclude_genres=genres(out.exclude_genres),
                                  year_min=out.year_min, year_max=out.year_max, k=out.count)
        wants = bool(mentions) or not constraints.is_empty() or out.relative_year is not None
        return Intent(mentions=mentions[:MAX_MENTIONS], constraints=constraints, relative_year=out.relative_year,
                      wants_recommendation=wants, off_topic=out.off_topic and not wants, parser="llm", notes=notes)
