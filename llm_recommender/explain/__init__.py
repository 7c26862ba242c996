"""Explanations grounded in what ranked an item: evidence from the fitted components, and reasons rendered from it.

:func:`explain_ranking` is the one entry point (``Recommender._respond`` calls it once per response)."""

from .evidence import gather_evidence
from .explainer import Explanation, explain_ranking

__all__ = ["Explanation", "explain_ranking", "gather_evidence"]
