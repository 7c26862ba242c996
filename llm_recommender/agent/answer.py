"""The agent's reply: readable text, plus a state block the next request can be rebuilt from.

The server keeps no conversation state, so every answer ends with a one-line HTML comment
(invisible in Markdown chat UIs) holding the shown item ids and any open question:
``<!-- llm-rec:{"v": 1, "items": [...], "ask": {...}} -->``. Titles are catalogue data: they are
flattened to one line and stripped of ``<``/``>`` so no title can forge or break that block.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..data.movielens import natural_title
from ..protocol import RankResponse
from .intent import Clarification, Constraints, TurnPlan

STATE_PREFIX = "<!-- llm-rec:"
STATE_SUFFIX = " -->"
STATE_RE = re.compile(r"<!-- llm-rec:(\{.{0,20000}?\}) -->")


def safe_title(title: str, max_chars: int = 200) -> str:
    text = natural_title(" ".join(title.split())).replace("<", "‹").replace(">", "›")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def state_block(items: list[str], ask: Clarification | None = None) -> str:
    data: dict[str, Any] = {"v": 1, "items": items, "ask": ask.model_dump(mode="json") if ask else None}
    # ensure_ascii and escaped angle brackets: the JSON itself can never contain "-->".
    payload = json.dumps(data, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e")
    return f"\n\n{STATE_PREFIX}{payload}{STATE_SUFFIX}"


def describe_constraints(c: Constraints) -> str:
    parts = []
    if c.include_genres:
        parts.append(" and ".join(c.include_genres).lower())
    if c.exclude_genres:
        parts.append("no " + " or ".join(c.exclude_genres).lower())
    if c.year_min is not None and c.year_max is not None:
        parts.append(f"from {c.year_min}" if c.year_min == c.year_max else f"from {c.year_min} to {c.year_max}")
    elif c.year_min is not None:
        parts.append(f"from {c.year_min} on")
    elif c.year_max is not None:
        parts.append(f"up to {c.year_max}")
    return ", ".join(parts)


def _titles(mentions: list[Any], n: int = 3) -> str:
    names = [safe_title(m.title or m.text, 80) for m in mentions[-n:]]
    more = len(mentions) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def list_pieces(plan: TurnPlan, response: RankResponse) -> list[str]:
    """The ranked list: an intro, then one piece per item (title and probability)."""
    if response.basis == "popularity":
        return popular_pieces(plan, response)
    basis = []
    if plan.liked:
        basis.append(f"you liked {_titles(plan.liked)}")
    wanted = describe_constraints(plan.constraints)
    intro = "Here are my picks"
    if basis:
        intro += " because " + basis[0]
    if wanted:
        intro += f" ({wanted})"
    pieces = [intro + ":\n"]
    pieces += [f"{it.rank}. {safe_title(it.title)} — {it.probability:.0%} match\n" for it in response.items]
    return pieces


def popular_pieces(plan: TurnPlan, response: RankResponse) -> list[str]:
    """Cold start (nothing known of the user): say that the list is by popularity, and what each share is."""
    if plan.unresolved:
        names = ", ".join(f'"{safe_title(t, 80)}"' for t in plan.unresolved[:3])
        intro = f"I could not find {names} in the catalogue, so here is what is most popular with everyone"
    else:
        intro = "You have not told me anything you like yet, so here is what is most popular with everyone"
    wanted = describe_constraints(plan.constraints)
    if wanted:
        intro += f" ({wanted})"
    intro += ". Tell me a few titles you like and I will pick for you:\n"
    return [intro] + [f"{it.rank}. {safe_title(it.title)} — {it.probability:.0%} of users\n" for it in response.items]


def tail_pieces(plan: TurnPlan, response: RankResponse) -> list[str]:
    """After the list: the reasons (one per item, when the ranking gave them), what was left out, the state."""
    pieces = []
    reasons = [(it.rank, it.reason) for it in response.items if it.reason]
    if reasons:
        pieces.append("\nWhy:\n" + "".join(f"{rank}. {safe_title(reason, 300)}\n" for rank, reason in reasons))
    skipped = len(plan.seen) + len(plan.disliked)
    if skipped:
        pieces.append(f"\n(I left out {skipped} title(s) you have seen or did not like.)")
    pieces.append(state_block([it.id for it in response.items]))
    return pieces


def recommendation_pieces(plan: TurnPlan, response: RankResponse) -> list[str]:
    """Streaming order: the list first (intro, one piece per item), then the reasons, notes, the state."""
    return list_pieces(plan, response) + tail_pieces(plan, response)


def clarification_pieces(ask: Clarification, plan: TurnPlan) -> list[str]:
    lines = [f'Which "{safe_title(ask.mention, 80)}" do you mean?\n']
    lines += [f"{n}. {safe_title(o.title)}\n" for n, o in enumerate(ask.options, 1)]
    lines.append("Reply with the number or the title.")
    return ["".join(lines), state_block(plan.previous_ids, ask)]


def off_topic_pieces(plan: TurnPlan) -> list[str]:
    text = ("I can only help with finding movies from this catalogue. Tell me a few titles you liked "
            "(or a genre, or a period), and I will suggest what to watch next.")
    return [text, state_block(plan.previous_ids)]


def empty_pieces(plan: TurnPlan) -> list[str]:
    wanted = describe_constraints(plan.constraints)
    text = "I found nothing in the catalogue that fits" + (f" ({wanted})" if wanted else "")
    text += " and that you have not seen or been shown already. Try loosening a constraint."
    return [text, state_block(plan.previous_ids)]
