"""The LLM ranker's prompt and scoring: the verbalizer's objective with collaborative hints.

One prompt shows the history (titles; no ratings: the training sequences carry none, and the
prompt must read the same in training and at serving) and up to ``max_per_pass`` candidates,
each labelled with a single-token letter and followed by its hints; the next-token
log-probabilities of the labels, renormalised over the labels in use, are the candidates'
scores. Requests with more candidates run in chunks of ``max_per_pass`` (one pass each).
Training renders its examples through :meth:`RankerPrompter.render` too, so the model is
trained on exactly the prompts it scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidRequestError
from ..protocol import Item, RankRequest
from ..scorers.base import ScoreResult, softmax_logprobs
from ..scorers.item_space import ItemSpace
from ..scorers.llm.verbalizer import label_tokens
from .hints import CollaborativeHints

TEMPLATE = "llm_ranker.j2"


class RankerPrompter:
    def __init__(self, backend: Any, space: ItemSpace, hints: CollaborativeHints, *, history: int,
                 max_per_pass: int, show_hints: bool, retrieval_history: int) -> None:
        from ..prompts import PromptConfig, PromptRenderer

        self.backend, self.space, self.hints = backend, space, hints
        self.show_hints, self.retrieval_history = show_hints, retrieval_history
        self.renderer = PromptRenderer(backend, PromptConfig(max_history=history))
        labels, ids = label_tokens(backend)
        n = min(max_per_pass, len(labels))
        self.labels, self.label_ids = labels[:n], ids[:n]

    @property
    def per_pass(self) -> int:
        return len(self.labels)

    def render(self, history: Sequence[Item], candidates: Sequence[Item], hints: Sequence[str]) -> tuple[str, int]:
        """The chat prompt and how many history items it shows (the oldest are dropped to fit the budget)."""
        if len(candidates) > self.per_pass:
            raise InvalidRequestError(f"{len(candidates)} candidates in one pass; at most {self.per_pass}",
                                      param="candidates")
        r = self.renderer
        keep = r.config.max_history
        views = [dataclasses.replace(r.item_view(h), rating=None) for h in (list(history)[-keep:] if keep else [])]
        cands = [r.item_view(c, label=self.labels[k]) for k, c in enumerate(candidates)]
        shown = list(hints) if self.show_hints else [""] * len(candidates)
        out = r.fit(TEMPLATE, views, candidates=cands, labels=self.labels[: len(candidates)], hints=shown)
        return out.text, out.history_used

    def prompt(self, ex: dict[str, Any]) -> tuple[str, list[int]]:
        """A training example (catalogue rows) -> (prompt, label token ids): what ``tuning.generative`` trains on."""
        items = self.space.items
        text, _ = self.render([items[r] for r in ex["history"]], [items[r] for r in ex["candidates"]], ex["hints"])
        return text, self.label_ids[: len(ex["candidates"])]


class RankerScorer:
    """Scores requests with a (tuned) model through the backend: one pass per chunk of candidates."""

    def __init__(self, prompter: RankerPrompter) -> None:
        self.prompter = prompter

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        p = self.prompter
        backend = p.backend
        out = []
        for request in requests:
            history = p.renderer.chronological(request.history)
            ranks = p.hints.catalogue_ranks(history[-p.retrieval_history :]) if p.show_hints else None
            rows = p.space.rows(request.candidates)
            words = p.hints.words(rows, ranks) if ranks is not None else [""] * len(rows)
            n = len(request.candidates)
            chunks = [range(a, min(n, a + p.per_pass)) for a in range(0, n, p.per_pass)]
            prompts, used = [], len(history)
            for chunk in chunks:
                text, shown = p.render(history, [request.candidates[i] for i in chunk], [words[i] for i in chunk])
                prompts.append(text)
                used = min(used, shown)
            scores = np.zeros(n)
            if prompts:
                lp = backend.next_token_logprobs(prompts, p.label_ids)
                for row, chunk in enumerate(chunks):
                    scores[list(chunk)] = np.log(np.clip(softmax_logprobs(lp[row, : len(chunk)]), 1e-12, None))
            notes = [f"ranked in {len(chunks)} passes of at most {p.per_pass} candidates"] if len(chunks) > 1 else []
            out.append(ScoreResult(scores=scores, probabilities=np.exp(scores), history_used=used, notes=notes,
                                   details={"passes": len(chunks)}))
        return out
