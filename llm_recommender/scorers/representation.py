"""Representation scorer: a learned logistic head over LLM hidden states (no generation).

h_i = pooled hidden state of the model over the item's rendered text (cached on disk,
see :mod:`llm_recommender.representation.encoder`); h_u = recency-weighted mean of the
history items' h_i (they are cached too, so a request costs one forward pass per *new*
item and none for known ones); score = the head's logit over ``[h_u; h_i; h_u*h_i]``,
probability = its sigmoid (then the Recommender's calibrator, if any).

The head is trained with ``llm-rec tune head`` and given as ``representation_head`` (a
folder; setting ``LLM_REC_REPRESENTATION_HEAD``, ``--head`` on the CLI) or as ``head=``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.base import Backend
from ..errors import CapabilityError, InvalidRequestError
from ..prompts import PromptRenderer
from ..protocol import RankRequest
from ..representation.encoder import ItemEncoder
from ..representation.head import RepresentationHead
from ..representation.training import user_vector
from ..settings import Settings
from .base import LLMScorer, ScoreResult


class RepresentationScorer(LLMScorer):
    name = "representation"

    def __init__(
        self,
        backend: Backend,
        renderer: PromptRenderer,
        settings: Settings,
        head: RepresentationHead | str | None = None,
        cache: Any = True,
    ) -> None:
        super().__init__(backend, renderer, settings)
        if head is None:
            head = settings.representation_head
        if head is None:
            raise InvalidRequestError(
                "the representation strategy needs a trained head: train one with `llm-rec tune head` and pass "
                "--head DIR (setting representation_head / LLM_REC_REPRESENTATION_HEAD)",
                param="representation_head",
            )
        self.head = head if isinstance(head, RepresentationHead) else RepresentationHead.load(head)
        model, tokenizer = getattr(backend, "model", None), getattr(backend, "tokenizer", None)
        if model is None or tokenizer is None:
            raise CapabilityError(
                f"the representation strategy reads hidden states: it needs the in-process transformers backend, "
                f"not {backend.name!r}",
                param="backend",
            )
        if int(model.config.hidden_size) != self.head.hidden_size:
            raise InvalidRequestError(
                f"the head was trained on a model with hidden size {self.head.hidden_size} "
                f"({self.head.config.model!r}); {backend.model_name!r} has {model.config.hidden_size}",
                param="representation_head",
            )
        cfg = self.head.config
        self.encoder = ItemEncoder(
            model,
            tokenizer,
            renderer,
            model_name=backend.model_name,
            layer=cfg.layer,
            pooling=cfg.pooling,
            batch_size=settings.batch_size,
            cache=cache,
        )

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        cfg = self.head.config
        # one encoder call for every item of the batch; known items come from the cache
        recent = [r.history[-cfg.max_history :] if cfg.max_history else [] for r in requests]
        texts = [self.encoder.item_text(i) for hist, r in zip(recent, requests) for i in [*hist, *r.candidates]]
        vectors = dict(zip(texts, self.encoder.encode_texts(texts))) if texts else {}
        results = []
        pos = 0
        for hist, request in zip(recent, requests):
            h_hist = np.stack([vectors[texts[pos + k]] for k in range(len(hist))]) if hist else None
            pos += len(hist)
            h_items = np.stack([vectors[texts[pos + k]] for k in range(len(request.candidates))])
            pos += len(request.candidates)
            notes = []
            if h_hist is None:
                u = np.zeros(self.head.hidden_size, dtype=np.float32)
                notes.append("empty history: scores reflect the items alone")
            else:
                u = user_vector(h_hist, np.arange(len(hist)), cfg.recency_decay, cfg.max_history)
            logits = self.head.logits(u, h_items).astype(float)
            results.append(
                ScoreResult(
                    scores=logits,
                    probabilities=1.0 / (1.0 + np.exp(-np.clip(logits, -50, 50))),
                    history_used=len(hist),
                    notes=notes,
                )
            )
        return results
