"""Listwise: the LLM writes a JSON ranking of all candidate ids.

Decoding is constrained by a JSON schema built from a pydantic model (ids as an enum,
length fixed) where the backend supports it. The parser then checks that the ranking
is a permutation of the candidate ids; if not, the model is re-asked with the
validation error, at most ``listwise_retries`` times, after which the verbalizer
scores are used and the fallback is recorded in the result.

``probability`` always comes from the verbalizer pass (the model's own distribution
over the candidates); it is computed up front because it doubles as the fallback.
"""

from __future__ import annotations

import numpy as np

from ..protocol import Fallback, RankRequest
from ..structured import ParseFailure, parse_ranking, ranking_schema
from .base import LLMScorer, ScoreResult
from .verbalizer import VerbalizerScorer


class ListwiseScorer(LLMScorer):
    name = "listwise"

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        base = VerbalizerScorer(self.backend, self.renderer, self.settings).score_many(requests)
        use_schema = self.backend.supports_json_schema
        states = []
        for request, verb in zip(requests, base):
            history = self.renderer.history_views(request.history)
            views = [self.renderer.item_view(c) for c in request.candidates]
            ids = [c.id for c in request.candidates]
            rendered = self.renderer.fit("listwise.j2", history, extra_tokens=self.settings.listwise_max_tokens, candidates=views)
            kept = history[len(history) - rendered.history_used :] if rendered.history_used else []
            messages = self.renderer.messages("listwise.j2", history=kept, candidates=views)
            states.append({"ids": ids, "messages": messages, "attempts": [], "ranking": None, "verb": verb,
                           "used": min(rendered.history_used, verb.history_used), "notes": rendered.notes})

        for _round in range(self.settings.listwise_retries + 1):
            pending = [s for s in states if s["ranking"] is None]
            if not pending:
                break
            prompts = [self.backend.chat_prompt(s["messages"]) for s in pending]
            schemas = [ranking_schema(s["ids"]) if use_schema else None for s in pending]
            # Schemas differ per request; backends that can batch them do so.
            gens = self.backend.generate_batch(prompts, max_tokens=self.settings.listwise_max_tokens, json_schemas=schemas)
            for state, gen in zip(pending, gens):
                try:
                    state["ranking"] = parse_ranking(gen.text, state["ids"])
                    state["attempts"].append({"ok": True, "finish_reason": gen.finish_reason})
                except ParseFailure as exc:
                    state["attempts"].append({"ok": False, "kind": exc.kind, "error": exc.message, "raw": gen.text[:2000],
                                              "finish_reason": gen.finish_reason})
                    retry = self.renderer.render("listwise_retry.j2", error=exc.message, ids=[f'"{i}"' for i in state["ids"]])
                    state["messages"] = state["messages"] + [
                        {"role": "assistant", "content": gen.text[:2000]},
                        {"role": "user", "content": retry.strip()},
                    ]

        results = []
        for state in states:
            verb: ScoreResult = state["verb"]
            n = len(state["ids"])
            details = {"attempts": state["attempts"], "label_mass": verb.details.get("label_mass")}
            if state["ranking"] is not None:
                index = {cid: i for i, cid in enumerate(state["ids"])}
                order = [index[cid] for cid in state["ranking"]]
                scores = np.empty(n)
                for pos, cand in enumerate(order):
                    scores[cand] = 1.0 - pos / max(n - 1, 1)  # 1.0 for the top, 0.0 for the last
                results.append(ScoreResult(scores=scores, probabilities=verb.probabilities, history_used=state["used"],
                                           order=order, notes=state["notes"], details=details | {"fallback": False}))
            else:
                last = state["attempts"][-1]
                fallback = Fallback(stage="listwise", reason=f"{last['kind']}: {last['error']}",
                                    attempts=len(state["attempts"]), used="verbalizer")
                results.append(ScoreResult(scores=verb.scores, probabilities=verb.probabilities, history_used=state["used"],
                                           fallbacks=[fallback], notes=state["notes"], details=details | {"fallback": True}))
        return results
