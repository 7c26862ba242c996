"""One chat turn: messages -> plan -> (history, pool, k) -> injected ranking -> answer.

The ranking is the caller's: ``rank_fn(history, pool, k) -> RankResponse`` (the fitted
bundle in the server, a fake in tests). The agent only decides *what* to rank and checks
the result: every returned item must come from the pool it handed over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequestError, UnknownNameError
from ..protocol import HistoryEntry, Item, RankResponse
from .answer import clarification_pieces, empty_pieces, off_topic_pieces, recommendation_pieces
from .catalogue import CatalogueIndex
from .dialogue import Parser, build_plan, candidate_pool, history_of
from .intent import TurnPlan
from .llm_parser import LLMParser
from .parser import DeterministicParser

RankFn = Callable[[list[HistoryEntry], list[Item], int], RankResponse]


class AgentAnswer(BaseModel):
    """The structured side of a chat turn; ``recommendation`` has the /v1/recommendations shape."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["recommendation", "clarification", "off_topic", "no_match"]
    recommendation: RankResponse | None = None
    plan: TurnPlan
    pieces: list[str] = Field(description="the text in streaming order (the list first); text is their join")
    list_pieces: int = Field(default=0, description="how many of ``pieces`` are the ranked list (sent before the reasons)")

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def make_parser(parser: str | Parser, catalogue: CatalogueIndex, backend: Any = None) -> Parser:
    if not isinstance(parser, str):
        return parser
    if parser == "deterministic":
        return DeterministicParser(catalogue)
    if parser == "llm":
        if backend is None:
            raise InvalidRequestError("the 'llm' parser needs a backend", param="parser")
        return LLMParser(catalogue, backend)
    raise UnknownNameError("parser", parser, ["deterministic", "llm"])


def chat_turn(messages: Sequence[Any], catalogue: CatalogueIndex, rank_fn: RankFn, *,
              parser: str | Parser = "deterministic", backend: Any = None) -> tuple[str, AgentAnswer]:
    """Answer the last user message of ``messages`` (dicts or server ``ChatMessage``s)."""
    if not messages:
        raise InvalidRequestError("no messages", param="messages")
    plan = build_plan(messages, catalogue, make_parser(parser, catalogue, backend))
    if plan.action == "clarify":
        assert plan.clarification is not None
        answer = AgentAnswer(kind="clarification", plan=plan, pieces=clarification_pieces(plan.clarification, plan))
        return answer.text, answer
    if plan.action == "off_topic":
        answer = AgentAnswer(kind="off_topic", plan=plan, pieces=off_topic_pieces(plan))
        return answer.text, answer
    pool = candidate_pool(plan, catalogue)
    if not pool:
        answer = AgentAnswer(kind="no_match", plan=plan, pieces=empty_pieces(plan))
        return answer.text, answer
    k = min(plan.k, len(pool))
    response = checked(rank_fn(history_of(plan, catalogue), pool, k), pool, k)
    answer = AgentAnswer(kind="recommendation", recommendation=response, plan=plan,
                         pieces=recommendation_pieces(plan, response), list_pieces=1 + len(response.items))
    return answer.text, answer


def checked(response: RankResponse, pool: list[Item], k: int) -> RankResponse:
    """Keep only pool items (once each), at most ``k``, re-numbered; note anything dropped."""
    allowed = {it.id for it in pool}
    seen: set[str] = set()
    kept = []
    for it in response.items:
        if it.id in allowed and it.id not in seen:
            seen.add(it.id)
            kept.append(it)
    dropped = len(response.items) - len(kept)
    kept = [it.model_copy(update={"rank": n}) for n, it in enumerate(kept[:k], 1)]
    notes = list(response.notes)
    if dropped:
        notes.append(f"{dropped} ranked item(s) outside the allowed pool were dropped")
    return response.model_copy(update={"items": kept, "notes": notes})
