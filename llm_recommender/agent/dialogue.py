"""Rebuild the conversation state from the full message list the client sends back.

Only assistant messages are read for state (the block written by :mod:`.answer`), and only
ids that exist in the catalogue are kept: a user message cannot plant state, and a forged
block can at most point at real catalogue items. System and tool messages are ignored: the
agent's behaviour is not configurable from the conversation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from ..protocol import HistoryEntry, Item
from .answer import STATE_RE
from .catalogue import CatalogueIndex
from .intent import DEFAULT_K, MAX_K, MAX_MENTIONS, MAX_OPTIONS, Clarification, Constraints, Intent, Mention, TurnPlan
from .parser import ParseContext

MAX_MESSAGES = 64
_LIST_LINE = re.compile(r"^\s*(\d{1,2})\.\s+(.+?)\s+—\s+\d{1,3}% (?:match|of users)", re.MULTILINE)


class Parser(Protocol):
    name: str

    def parse(self, text: str, context: ParseContext | None = None) -> Intent: ...


def message_role_text(message: Any) -> tuple[str, str]:
    """(role, text) of a dict message or a server ``ChatMessage``."""
    if isinstance(message, dict):
        role, content = message.get("role", ""), message.get("content")
    else:
        role, content = getattr(message, "role", ""), getattr(message, "content", None)
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(p.get("text", "") if isinstance(p, dict) else getattr(p, "text", "") for p in content)
    return str(role), content if isinstance(content, str) else ""


def read_state(text: str, catalogue: CatalogueIndex) -> tuple[list[str], Clarification | None]:
    """The shown items and the open question of one assistant message."""
    blocks = STATE_RE.findall(text)
    if blocks:
        try:
            data = json.loads(blocks[-1])
            items = [str(i) for i in data.get("items", [])[:MAX_K] if str(i) in catalogue]
            ask = Clarification.model_validate(data["ask"]) if data.get("ask") else None
        except (json.JSONDecodeError, ValidationError, AttributeError, TypeError):
            return [], None
        if ask is not None:
            ask.options = [o for o in ask.options[:MAX_OPTIONS] if o.id in catalogue]
            ask = ask if ask.options else None
        return items, ask
    # No block (a client that strips comments): read the numbered list back by exact title.
    by_title = {it.title: it.id for it in catalogue.items}
    return [by_title[t] for _, t in _LIST_LINE.findall(text) if t in by_title][:MAX_K], None


def _years(ids: Sequence[str], catalogue: CatalogueIndex) -> list[int]:
    return [y for y in (catalogue.years.get(i) for i in ids) if y is not None]


def build_plan(messages: Sequence[Any], catalogue: CatalogueIndex, parser: Parser) -> TurnPlan:
    """The plan for the last user message, from every user turn and the assistant's state blocks."""
    notes: list[str] = []
    if len(messages) > MAX_MESSAGES:
        notes.append(f"only the last {MAX_MESSAGES} messages are read")
        messages = list(messages)[-MAX_MESSAGES:]
    by_polarity: dict[str, dict[str, Mention]] = {"liked": {}, "disliked": {}, "seen": {}}
    constraints = Constraints()
    shown: list[str] = []
    previous: list[str] = []
    pending: Clarification | None = None
    last: Intent | None = None
    for message in messages:
        role, text = message_role_text(message)
        if role == "assistant":
            previous, pending = read_state(text, catalogue)
            shown += [i for i in previous if i not in shown]
            continue
        if role != "user":
            continue
        last = parser.parse(text, ParseContext(previous_ids=previous, pending=pending))
        pending = None
        for mention in last.mentions:
            if mention.item_id is not None:
                for table in by_polarity.values():
                    table.pop(mention.item_id, None)  # the latest statement about an item wins
                by_polarity[mention.polarity][mention.item_id] = mention
        step = _relative_years(last, previous, list(by_polarity["liked"]), catalogue, notes) if last.relative_year else last.constraints
        constraints = constraints.merged(step)
        notes += last.notes
    if last is None:
        return TurnPlan(action="off_topic", parser=getattr(parser, "name", "deterministic"),
                        notes=notes + ["no user message"])
    ambiguous = [m for m in last.mentions if m.ambiguous]
    clarification = None
    if ambiguous:
        first = ambiguous[0]
        clarification = Clarification(mention=first.text, polarity=first.polarity, options=first.candidates[:MAX_OPTIONS])
    unresolved = [n.split("'")[1] for n in last.notes if n.startswith("no catalogue item matches") and "'" in n]
    liked = list(by_polarity["liked"].values())[-MAX_MENTIONS:]
    disliked = list(by_polarity["disliked"].values())[-MAX_MENTIONS:]
    seen = list(by_polarity["seen"].values())[-MAX_MENTIONS:]
    excluded = list(dict.fromkeys([m.item_id for m in liked + disliked + seen if m.item_id] + shown))
    action = "clarify" if clarification else ("off_topic" if last.off_topic else "recommend")
    return TurnPlan(
        action=action, parser=last.parser, liked=liked, disliked=disliked, seen=seen, constraints=constraints,
        k=constraints.k or DEFAULT_K, excluded_ids=excluded, previous_ids=previous, mentions=last.mentions, clarification=clarification,
        unresolved=unresolved, notes=notes,
    )


def _relative_years(last: Intent, previous: list[str], liked: list[str], catalogue: CatalogueIndex,
                    notes: list[str]) -> Constraints:
    """"Something older/newer": relative to what was just shown, else to what the user named or liked."""
    reference = _years(previous, catalogue) or _years([m.item_id for m in last.mentions if m.item_id], catalogue)
    reference = reference or _years(liked, catalogue)
    if not reference:
        notes.append(f"'{last.relative_year}' needs a previous answer or a title to compare with")
        return last.constraints
    if last.relative_year == "older":
        return last.constraints.model_copy(update={"year_max": min(reference) - 1, "year_min": None})
    return last.constraints.model_copy(update={"year_min": max(reference) + 1, "year_max": None})


def history_of(plan: TurnPlan, catalogue: CatalogueIndex) -> list[HistoryEntry]:
    """The liked items, oldest statement first (so "more like the second one" is the most recent).

    The user said they liked them and gave no rating: ``stated=True`` and no rating, so no reason invents one
    ("you said you liked Alien", not "you rated Alien 5★"). The bundle's components ignore ratings (every
    history entry is an interaction), so the ranking is the same as with the old ``rating=5.0``."""
    out = []
    for n, m in enumerate(plan.liked):
        item = catalogue.by_id[m.item_id]  # type: ignore[index]
        out.append(HistoryEntry(**item.model_dump(), stated=True, timestamp=n))
    return out


def allowed(item_id: str, plan: TurnPlan, catalogue: CatalogueIndex, excluded: set[str] | None = None) -> bool:
    """Does this catalogue item respect the plan's constraints and exclusions?"""
    if item_id in (excluded if excluded is not None else set(plan.excluded_ids)):
        return False
    c = plan.constraints
    if c.year_min is not None or c.year_max is not None:
        year = catalogue.years.get(item_id)
        if year is None or (c.year_min is not None and year < c.year_min) or (c.year_max is not None and year > c.year_max):
            return False
    genres = set(catalogue.genres.get(item_id, []))
    if c.include_genres and not set(c.include_genres) <= genres:
        return False
    return not (genres & set(c.exclude_genres))


def candidate_pool(plan: TurnPlan, catalogue: CatalogueIndex) -> list[Item]:
    excluded = set(plan.excluded_ids)
    return [it for it in catalogue.items if allowed(it.id, plan, catalogue, excluded)]
