"""The ``Scorer`` seam: turns validated requests into one score and probability per candidate.

Scorers work on many requests at once (``score_many``) so that backends can batch
prompts across users; ``score`` is the one-request convenience.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ..backends.base import Backend
from ..configurable import ComponentConfig, Configurable
from ..prompts import PromptRenderer
from ..protocol import Fallback, RankRequest


@dataclass
class ScoreResult:
    """Scores for one request, aligned with ``request.candidates``."""

    scores: np.ndarray
    probabilities: np.ndarray
    history_used: int
    order: list[int] | None = None  # explicit ranking (listwise); default: by score
    fallbacks: list[Fallback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # (prompt_tokens, completion_tokens, forward_passes) of this request's own backend calls, when
    # the scorer called the backend per request; None: a share of the batch's calls.
    usage: tuple[int, int, int] | None = None

    def ranking(self) -> list[int]:
        """Candidate indices, best first (stable on ties: earlier candidate first)."""
        if self.order is not None:
            return list(self.order)
        return sorted(range(len(self.scores)), key=lambda i: (-float(self.scores[i]), i))


class Scorer(Configurable, abc.ABC):
    """Anything that scores candidates for a user; its settings are a :class:`ComponentConfig` in ``config``.

    Class flags say what differs between scorers (the registry and the doors read them, never name lists):
    ``needs_fit``: learned from training interactions, so it exists only inside a fitted bundle;
    ``needs_llm``: built on the LLM backend, and runs the model for every request (cost);
    ``side``: ``item`` reads state kept per catalogue item (the bundle's item space), ``request``
    reads the request alone.
    """

    name: ClassVar[str] = "base"
    needs_fit: ClassVar[bool] = False
    needs_llm: ClassVar[bool] = False
    side: ClassVar[Literal["item", "request"]] = "request"

    @abc.abstractmethod
    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]: ...

    def score(self, request: RankRequest) -> ScoreResult:
        return self.score_many([request])[0]


class LLMScorer(Scorer):
    """A scorer that prompts a language model through the ``Backend`` seam.

    It is built from its own knobs only: ``config`` (``config_class``), given as a config
    object, a dict or keyword arguments (defaults where none are given). The pipeline's
    ``Settings`` never reach a scorer: the Recommender builds its config from them in one
    place (:meth:`~llm_recommender.recommender.Recommender.config_for`). The prompt
    renderer is a collaborator, shared with the pipeline (default: the built-in templates
    and budget).
    """

    needs_llm = True

    def __init__(
        self,
        backend: Backend,
        renderer: PromptRenderer | None = None,
        config: ComponentConfig | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.backend = backend
        self.renderer = renderer if renderer is not None else PromptRenderer(backend)
        self.config = self.validate_config(config, kwargs)


def softmax_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """Renormalise label log-probabilities into a distribution over the labels."""
    z = logprobs - logprobs.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)
