"""Protocol models shared by the Python API, the CLI, the server and the eval harness.

Requests are validated once, when a :class:`RankRequest` is built (types, sizes, UTF-8,
duplicate candidate ids); :func:`parse_request` turns every problem into an
:class:`~llm_recommender.errors.InvalidRequestError` naming the offending field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidRequestError, from_validation_error

# Hard limits: beyond these a request is rejected (softer prompt-side truncation is in prompts.py).
MAX_ID_CHARS = 256
MAX_TITLE_CHARS = 2_000
MAX_DESCRIPTION_CHARS = 20_000
MAX_CANDIDATES = 200
MAX_HISTORY = 2_000


def _coerce_id(value: Any) -> Any:
    # Dataset ids are often ints; the protocol keeps them as strings.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def check_text(value: Any) -> Any:
    """Refuse a string that cannot be UTF-8 encoded (a lone surrogate such as ``"\\ud800"``,
    which JSON's escapes can carry): it would fail later, when an answer is encoded, as a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"text is not valid UTF-8 (bad character at position {exc.start})") from None
    return value


_check_utf8 = check_text
# Every free-text field a client sends is this type (here and in the server's protocol), so a
# lone surrogate is a 400 naming the field wherever it comes in.
Text = Annotated[str, AfterValidator(check_text)]
ItemId = Annotated[str, BeforeValidator(_coerce_id), Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(check_text)]
AttributeValue = str | int | float | bool | list[str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class _Input(_Model):
    # Python's json (the server and the CLI) parses NaN and Infinity; they are no rating,
    # timestamp or attribute, so every door answers them with a 400 naming the field.
    model_config = ConfigDict(allow_inf_nan=False)


def _reject_non_finite(value: Any, what: str = "") -> None:
    # Before the union of types is tried: its errors would name each member (".float", ".str").
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what}must be a finite number, not {value}")


class Item(_Input):
    """A thing that can be recommended."""

    id: ItemId
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_CHARS)
    attributes: dict[str, AttributeValue] | None = None

    @field_validator("title", "description", mode="after")
    @classmethod
    def _utf8(cls, v: str | None) -> str | None:
        _check_utf8(v)
        if v is not None and not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("attributes", mode="before")
    @classmethod
    def _finite_attrs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for key, val in v.items():
                for x in val if isinstance(val, list) else [val]:
                    _reject_non_finite(x, f"attribute {key!r} ")
        return v

    @field_validator("attributes", mode="after")
    @classmethod
    def _utf8_attrs(cls, v: dict[str, AttributeValue] | None) -> dict[str, AttributeValue] | None:
        for key, val in (v or {}).items():
            _check_utf8(key)
            for s in val if isinstance(val, list) else [val]:
                _check_utf8(s)
        return v


def item_genres(item: Item) -> list[str]:
    """The item's ``genres`` attribute as a list of strings (empty when it has none)."""
    genres = (item.attributes or {}).get("genres")
    if isinstance(genres, list):
        return [g for g in genres if isinstance(g, str)]
    return [genres] if isinstance(genres, str) else []


class HistoryEntry(Item):
    """An item the user interacted with, plus optional rating and timestamp.

    ``title`` may be left out when a bundle's catalogue knows the ``id``: the recommender fills it
    in (:func:`fill_history_titles`); anywhere else a title-less entry is an error naming its ``title``.
    """

    title: str = Field(default="", max_length=MAX_TITLE_CHARS,
                       description="may be left out when the bundle's catalogue knows the id")
    rating: float | None = None
    timestamp: int | float | str | None = None
    stated: bool = Field(default=False, description="the user said they liked it (e.g. in chat) without rating it: "
                         "reasons say 'you said you liked', never a rating; components score it as any interaction")

    @field_validator("timestamp", mode="before")
    @classmethod
    def _finite_timestamp(cls, v: Any) -> Any:
        # Before the union of types is tried (its errors would name each member).
        _reject_non_finite(v)
        return check_text(v)


class RankRequest(_Input):
    history: list[HistoryEntry] = Field(default_factory=list, max_length=MAX_HISTORY)
    candidates: list[Item] = Field(default_factory=list, max_length=MAX_CANDIDATES,
                                   description="empty: a bundle retrieves candidates from its catalogue")
    top_k: int = Field(default=10, ge=1, le=MAX_CANDIDATES)
    reasons: bool | Literal["evidence", "llm"] = Field(
        default=False, description="true: 'evidence' with a fused bundle ranking (rendered from what ranked the item), else 'llm'")
    strategy: Text | None = None

    @model_validator(mode="after")
    def _unique_candidate_ids(self) -> RankRequest:
        # Raised as the typed error itself (not a ValueError), so it leaves pydantic naming the
        # exact field; a RankRequest that exists has passed every check, wherever it was built.
        seen: dict[str, int] = {}
        for i, cand in enumerate(self.candidates):
            if cand.id in seen:
                raise InvalidRequestError(
                    f"duplicate candidate id {cand.id!r} (also at candidates[{seen[cand.id]}])",
                    param=f"candidates[{i}].id",
                )
            seen[cand.id] = i
        return self


class Fallback(_Model):
    """Something did not go as planned and a fallback was used instead."""

    stage: Literal["listwise", "reason"]
    reason: str
    attempts: int = 0
    used: str = Field(description="what was used instead, e.g. 'verbalizer' or 'none'")


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_passes: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class EvidenceItem(_Model):
    """A history item that drove a recommended item's score, and through which component."""

    id: str
    title: str
    component: str = Field(description="e.g. 'cooccurrence' (users who watched both) or 'embedding' (similar text)")
    strength: float = Field(description="co-occurrence: users who consumed both; text: cosine similarity")
    rating: float | None = None
    stated: bool = Field(default=False, description="the user said they liked it, with no rating")
    shared: list[str] = Field(default_factory=list, description="attribute values the recommended item shares with it")


class Evidence(_Model):
    """What actually ranked an item (fused strategy): structured, so reasons can be rendered from it."""

    contributions: dict[str, float] = Field(
        default_factory=dict, description="fusion term theta_k * x_k per component, in logit units")
    shares: dict[str, float] = Field(default_factory=dict, description="|term| / sum |terms|, per component")
    history_items: list[EvidenceItem] = Field(default_factory=list)
    shared_attributes: dict[str, list[str]] = Field(
        default_factory=dict, description="attribute values the item shares with the cited history items")
    known_item: bool = Field(default=True, description="False: the bundle never saw the item; scored from its text")


class RankedItem(_Model):
    id: str
    title: str
    rank: int = Field(ge=1, description="1-based rank")
    score: float = Field(description="strategy-specific raw score; higher is better")
    probability: float = Field(ge=0.0, le=1.0, description="P(user likes item), after the calibrator")
    reason: str | None = None
    evidence: Evidence | None = None


class RankResponse(_Model):
    items: list[RankedItem]
    strategy: str
    model: str
    backend: str
    calibrator: str = "identity"
    fallback_used: bool = False
    fallbacks: list[Fallback] = Field(default_factory=list)
    history_used: int = Field(description="history items that fit the prompt budget (most recent kept)")
    history_total: int
    basis: Literal["history", "popularity", "none"] = Field(
        default="history",
        description="what the ranking rests on. 'history': the user's history (the usual case). 'popularity': "
                    "cold start, no history item the catalogue knows; items ranked by how many of the bundle's "
                    "training users interacted with them, and probability is that share of users (a base rate, "
                    "not a personal estimate). 'none': no user signal and no popularity to fall back on (empty "
                    "history without a bundle, or a bundle that stores no interaction counts); see notes")
    notes: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


def parse_request(data: RankRequest | dict[str, Any]) -> RankRequest:
    """A validated request from a dict; a :class:`RankRequest` is returned as it is (it was checked when built)."""
    if isinstance(data, RankRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequestError(f"request must be a JSON object, got {type(data).__name__}", param=None)
    try:
        return RankRequest.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


def fill_history_titles(request: RankRequest, lookup: Callable[[str], Item | None] | None) -> RankRequest:
    """``request`` with each title-less history entry titled from ``lookup`` (a bundle's catalogue: id -> item).

    An entry left without a title (no catalogue, or an id it does not know) is an error naming ``history[i].title``.
    """
    missing = [i for i, h in enumerate(request.history) if not h.title]
    if not missing:
        return request
    history = list(request.history)
    for i in missing:
        known = lookup(history[i].id) if lookup is not None else None
        if known is None:
            why = ("the bundle's catalogue has no item with this id" if lookup is not None
                   else "without a bundle whose catalogue knows the id (Recommender.load, --bundle), give its title")
            raise InvalidRequestError(f"history[{i}] (id {history[i].id!r}) has no title: {why}",
                                      param=f"history[{i}].title")
        history[i] = history[i].model_copy(update={"title": known.title})
    return request.model_copy(update={"history": history})


def coerce_items(values: Any, model: type[Item], field: str) -> list[Any]:
    """Accept plain dicts or models for the Python API; errors name ``field[i]``."""
    if values is None:
        return []
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise InvalidRequestError(f"{field} must be a list of items", param=field)
    out = []
    for i, v in enumerate(values):
        if isinstance(v, model):
            out.append(v)
            continue
        if isinstance(v, Item) and model is HistoryEntry:
            v = v.model_dump()
        try:
            out.append(model.model_validate(v))
        except ValidationError as exc:
            raise from_validation_error(exc, prefix=f"{field}[{i}]") from None
    return out
