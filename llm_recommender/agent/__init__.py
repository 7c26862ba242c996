"""The recommender agent's understanding layer: catalogue linking, intent, dialogue state, answers.

>>> from llm_recommender.agent import CatalogueIndex, chat_turn
>>> text, answer = chat_turn(messages, CatalogueIndex(items), rank_fn)   # rank_fn(history, pool, k)
"""

from .agent import AgentAnswer, RankFn, chat_turn, checked, make_parser
from .catalogue import CatalogueIndex, Match, normalize
from .dialogue import build_plan, candidate_pool, history_of, read_state
from .intent import Clarification, Constraints, Intent, Mention, TurnPlan
from .parser import DeterministicParser, ParseContext

__all__ = [
    "AgentAnswer", "CatalogueIndex", "Clarification", "Constraints", "DeterministicParser", "Intent", "Match",
    "Mention", "ParseContext", "RankFn", "TurnPlan", "build_plan", "candidate_pool", "chat_turn", "checked",
    "history_of", "make_parser", "normalize", "read_state",
]
