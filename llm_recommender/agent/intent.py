"""The typed result of understanding one user message (``Intent``) and of a whole
conversation (``TurnPlan``): what the agent will rank, for whom, under which constraints.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Caps: a message cannot make the agent do unbounded work or grow the history without limit.
MAX_MENTIONS = 20
MAX_GENRES = 10
MAX_K = 20
DEFAULT_K = 5
MAX_OPTIONS = 5

Polarity = Literal["liked", "disliked", "seen"]
ParserName = Literal["deterministic", "llm"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(_Model):
    id: str
    title: str
    score: float


class Mention(_Model):
    """A span of the user's text that names (or tries to name) a catalogue item."""

    text: str = Field(max_length=300)
    polarity: Polarity = "liked"
    item_id: str | None = Field(default=None, description="the linked catalogue item; None if ambiguous or not found")
    title: str | None = None
    score: float = 0.0
    candidates: list[Candidate] = Field(default_factory=list, description="close alternatives when ambiguous")
    source: Literal["text", "reference", "clarification"] = "text"

    @property
    def ambiguous(self) -> bool:
        return self.item_id is None and len(self.candidates) > 1


class Constraints(_Model):
    include_genres: list[str] = Field(default_factory=list, max_length=MAX_GENRES)
    exclude_genres: list[str] = Field(default_factory=list, max_length=MAX_GENRES)
    year_min: int | None = None
    year_max: int | None = None
    k: int | None = Field(default=None, ge=1, le=MAX_K)

    def is_empty(self) -> bool:
        return not (self.include_genres or self.exclude_genres or self.year_min or self.year_max or self.k)

    def merged(self, later: Constraints) -> Constraints:
        """Genres accumulate (a genre named again flips side); a later year range or count replaces."""
        inc = [g for g in self.include_genres if g not in later.exclude_genres]
        exc = [g for g in self.exclude_genres if g not in later.include_genres]
        inc += [g for g in later.include_genres if g not in inc]
        exc += [g for g in later.exclude_genres if g not in exc]
        years_given = later.year_min is not None or later.year_max is not None
        return Constraints(
            include_genres=inc[:MAX_GENRES], exclude_genres=exc[:MAX_GENRES],
            year_min=later.year_min if years_given else self.year_min,
            year_max=later.year_max if years_given else self.year_max,
            k=later.k or self.k,
        )


class Intent(_Model):
    """What one user message says."""

    mentions: list[Mention] = Field(default_factory=list, max_length=MAX_MENTIONS)
    constraints: Constraints = Field(default_factory=Constraints)
    relative_year: Literal["older", "newer"] | None = Field(
        default=None, description="'something older/newer': resolved against the previous answer's items")
    wants_recommendation: bool = False
    off_topic: bool = False
    parser: ParserName = "deterministic"
    notes: list[str] = Field(default_factory=list)


class Clarification(_Model):
    """A question back to the user: which of these did you mean?"""

    mention: str
    polarity: Polarity
    options: list[Candidate] = Field(max_length=MAX_OPTIONS)


class TurnPlan(_Model):
    """Everything the agent decided for the last user message, from the whole conversation."""

    action: Literal["recommend", "clarify", "off_topic"]
    parser: ParserName
    liked: list[Mention] = Field(default_factory=list)
    disliked: list[Mention] = Field(default_factory=list)
    seen: list[Mention] = Field(default_factory=list)
    constraints: Constraints = Field(default_factory=Constraints)
    k: int = DEFAULT_K
    excluded_ids: list[str] = Field(default_factory=list, description="never recommended: mentioned, seen, shown")
    previous_ids: list[str] = Field(default_factory=list, description="the previous answer's items, in order")
    mentions: list[Mention] = Field(default_factory=list, description="what the last user message mentioned")
    clarification: Clarification | None = None
    unresolved: list[str] = Field(default_factory=list, description="mentions that matched nothing")
    notes: list[str] = Field(default_factory=list)
