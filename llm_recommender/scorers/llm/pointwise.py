"""Pointwise (TALLRec-style): P(Yes) against P(No) for "will the user like this item?".

The prompt is ``shared history prefix + candidate suffix``. The prefix is the same for
every candidate, so the backend computes it once (KV-cache reuse in transformers,
prefix caching in vLLM) and scores all suffixes on top of it. Set
``prefix_reuse=False`` (``settings.pointwise.prefix_reuse``, flat ``pointwise_prefix_reuse``) to send full prompts (the naive baseline the benchmark
compares against).
"""

from __future__ import annotations

import numpy as np

from ...backends.base import metered
from ...configurable import ComponentConfig
from ...errors import CapabilityError, InvalidRequestError
from ...prompts import SPLIT_MARKER
from ...protocol import RankRequest
from ..base import LLMScorer, ScoreResult


class PointwiseConfig(ComponentConfig):
    """Pointwise knobs: ``settings.pointwise`` (flat names ``pointwise_<field>``)."""

    settings_prefix = "pointwise_"
    prefix_reuse: bool = True  # score every candidate on top of one shared history prefix


class PointwiseScorer(LLMScorer):
    name = "pointwise"
    config_class = PointwiseConfig
    config: PointwiseConfig

    def _yes_no(self) -> list[int]:
        ids = [self.backend.single_token_id("Yes"), self.backend.single_token_id("No")]
        if None in ids:
            raise CapabilityError(f"model {self.backend.model_name!r} has no single tokens for Yes/No", param="model")
        return ids  # type: ignore[return-value]

    def split_prompts(self, request: RankRequest) -> tuple[str, list[str], int, list[str]]:
        """Return ``(prefix, suffixes, history_used, notes)`` for one request."""
        history = self.renderer.history_views(request.history)
        views = [self.renderer.item_view(c) for c in request.candidates]
        longest = max(views, key=lambda v: len(v.title) + len(v.description or "") + len(v.attributes or ""))
        # Fit the history against the longest candidate so every candidate's prompt fits.
        rendered = self.renderer.fit("pointwise.j2", history, candidate=longest, split=SPLIT_MARKER)
        kept = history[len(history) - rendered.history_used :] if rendered.history_used else []
        prefix, suffixes = None, []
        for view in views:
            text = self.renderer.chat("pointwise.j2", history=kept, candidate=view, split=SPLIT_MARKER)
            if text.count(SPLIT_MARKER) != 1:
                raise InvalidRequestError("pointwise template must contain {{ split }} exactly once", param="template_dir")
            head, tail = text.split(SPLIT_MARKER)
            if prefix is not None and head != prefix:
                raise InvalidRequestError(
                    "pointwise template must not mention the candidate before {{ split }}", param="template_dir"
                )
            prefix = head
            suffixes.append(tail)
        assert prefix is not None
        return prefix, suffixes, rendered.history_used, rendered.notes

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        self.backend.require("logprobs")
        yes_no = self._yes_no()
        results = []
        for request in requests:
            prefix, suffixes, used, notes = self.split_prompts(request)
            with metered() as meter:  # one request per call: its usage is exactly its own
                if self.config.prefix_reuse:
                    lp = self.backend.prefix_next_token_logprobs(prefix, suffixes, yes_no)
                else:  # one call per prompt: a backend must not find the shared prefix itself
                    lp = np.vstack([self.backend.next_token_logprobs([prefix + s], yes_no) for s in suffixes])
            log_odds = lp[:, 0] - lp[:, 1]
            p_yes = 1.0 / (1.0 + np.exp(-log_odds))  # P(Yes) renormalised over {Yes, No}
            results.append(
                ScoreResult(
                    scores=log_odds,
                    probabilities=p_yes,
                    history_used=used,
                    notes=list(notes),
                    details={"yes_no_mass": float(np.exp(lp).sum(axis=1).mean())},
                    usage=meter.snapshot(),
                )
            )
        return results
