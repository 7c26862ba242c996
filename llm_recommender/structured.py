"""Structured-output contracts with the LLM: JSON schemas from pydantic models, and parsers.

The pydantic model is the contract: its JSON schema constrains decoding where the
backend supports it, and the same model validates the output afterwards (a backend
without constrained decoding, a truncated generation, or a model that ignores the
schema all end up here). Validation errors are worded so they can be sent back to the
model in a re-ask.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RankingOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ranking: list[str]


class ReasonOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    similar_to: str | None = None
    reason: str


class ParseFailure(Exception):
    """Invalid model output. ``kind`` is one of: not_json, schema, unknown_id, duplicate_id, missing_id."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def ranking_schema(candidate_ids: list[str], k: int | None = None) -> dict[str, Any]:
    """JSON schema for a ranking of ``k`` (default all) of these ids (enum + fixed length)."""
    n = len(candidate_ids) if k is None else min(k, len(candidate_ids))
    ids_literal = Literal[tuple(candidate_ids)]  # type: ignore[valid-type]

    class Ranking(BaseModel):
        model_config = ConfigDict(extra="forbid")
        ranking: list[ids_literal] = Field(min_length=n, max_length=n)  # type: ignore[valid-type]

    return Ranking.model_json_schema()


def reason_schema(max_chars: int, history_titles: list[str] | None = None) -> dict[str, Any]:
    """``{"similar_to": <one of the history titles>, "reason": <capped text>}``.

    The enum makes the reference to the history a real history item by construction;
    without history only the reason is asked for.
    """
    if not history_titles:

        class Reason(BaseModel):
            model_config = ConfigDict(extra="forbid")
            reason: str = Field(min_length=1, max_length=max_chars)

        return Reason.model_json_schema()
    titles_literal = Literal[tuple(dict.fromkeys(history_titles))]  # type: ignore[valid-type]

    class GroundedReason(BaseModel):
        model_config = ConfigDict(extra="forbid")
        similar_to: titles_literal  # type: ignore[valid-type]
        reason: str = Field(min_length=1, max_length=max_chars)

    return GroundedReason.model_json_schema()


MAX_OUTPUT_CHARS = 50_000
_MAX_OBJECT_STARTS = 20


def extract_json_object(text: str) -> Any:
    """Parse ``text`` as JSON, tolerating prose or code fences around one JSON object.

    Bounded work on adversarial output: the text is capped, at most a few ``{`` starts
    are tried, and pathological nesting (RecursionError) counts as not JSON.
    """
    text = text.strip()[:MAX_OUTPUT_CHARS]
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(_MAX_OBJECT_STARTS):
        if start == -1:
            break
        try:
            return decoder.raw_decode(text, start)[0]
        except (json.JSONDecodeError, RecursionError):
            start = text.find("{", start + 1)
    raise ParseFailure("not_json", "the reply is not a JSON object")


def parse_ranking(text: str, candidate_ids: list[str], k: int | None = None) -> list[str]:
    """Validate that ``text`` holds ``{"ranking": [...]}``, a permutation of ``candidate_ids``.

    With ``k`` below the number of ids: exactly ``k`` distinct ids (a top-k ranking).
    """
    obj = extract_json_object(text)
    try:
        ranking = RankingOutput.model_validate(obj).ranking
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "reply"
        raise ParseFailure("schema", f'expected {{"ranking": [ids]}}: {where}: {first["msg"]}') from None
    valid = set(candidate_ids)
    unknown = [r for r in ranking if r not in valid]
    if unknown:
        raise ParseFailure("unknown_id", f"unknown ids {unknown[:5]}; use only the candidate ids")
    dupes = [r for r, k in Counter(ranking).items() if k > 1]
    if dupes:
        raise ParseFailure("duplicate_id", f"ids listed more than once: {dupes[:5]}")
    if k is not None and k < len(candidate_ids):
        if len(ranking) != k:
            raise ParseFailure("missing_id", f"expected the best {k} ids, got {len(ranking)}")
        return ranking
    missing = [c for c in candidate_ids if c not in set(ranking)]
    if missing:
        raise ParseFailure("missing_id", f"ids missing from the ranking: {missing[:5]}")
    return ranking


def _salvage_string_field(text: str, field: str) -> str | None:
    """The (possibly unterminated) JSON string value of ``field`` in broken JSON, or None."""
    at = text.find(f'"{field}"')
    if at == -1:
        return None
    rest = text[at + len(field) + 2 :].lstrip()
    if not rest.startswith(":"):
        return None
    rest = rest[1:].lstrip()
    if not rest.startswith('"'):
        return None
    out, i = [], 1
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest):
            try:
                out.append(json.loads(f'"{rest[i:i + 2]}"'))
            except json.JSONDecodeError:
                pass
            i += 2
            continue
        if ch == '"':
            break
        out.append(ch)
        i += 1
    return "".join(out)


def parse_reason(text: str, max_chars: int, history_titles: list[str] | None = None) -> str:
    """The reason text; a generation cut off by the token cap is salvaged if possible.

    A ``similar_to`` naming one of ``history_titles`` is folded into the text
    ("Like <title>: <reason>"); an unknown title is dropped rather than shown.
    """
    similar: str | None = None
    try:
        parsed = ReasonOutput.model_validate(extract_json_object(text))
        reason, similar = parsed.reason, parsed.similar_to
    except (ParseFailure, ValidationError):
        # Truncated JSON such as '{"reason": "Because you liked Heat and' -> keep the string's text.
        reason = _salvage_string_field(text, "reason")
        if reason is None:
            raise ParseFailure("not_json", "no reason in the reply") from None
    reason = " ".join(reason.split())
    if not reason:
        raise ParseFailure("schema", "empty reason")
    if similar and history_titles and similar in history_titles and similar not in reason:
        reason = f"Like {similar}: {reason}"
    if len(reason) > max_chars:
        reason = reason[: max_chars - 1].rstrip() + "…"
    return reason
