"""Every reason a response gives, and the evidence under it: :func:`explain_ranking` is the one entry point
(``Recommender._respond`` calls it once per response).

``evidence.py`` (what ranked an item, from the components the fusion kept), ``reasons.py`` (sentences
rendered from evidence, or from the request alone), ``llm_reasons.py`` (the LLM phrases them, under
structured output; ``ReasonsConfig``), ``degenerate.py`` (the filter an LLM reason must pass),
``gate.py`` (turns LLM reasons off for a model whose replies are mostly rejected), ``audit.py``."""

from .evidence import gather_evidence
from .explainer import Explanation, explain_ranking
from .llm_reasons import ReasonsConfig

__all__ = ["Explanation", "ReasonsConfig", "explain_ranking", "gather_evidence"]
