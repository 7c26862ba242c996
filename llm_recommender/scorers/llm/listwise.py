"""Listwise: the LLM writes a JSON ranking ``{"ranking": [keys]}`` of the candidates.

Keys are the candidate ids, or labels ``A, B, ...`` (``listwise_keys``). Two decoding
paths, recorded per result in ``details["decoding"]``:

* ``constrained`` (backends that can, ``listwise_decoding="auto"|"constrained"``):
  every generated token is masked so that the output is a duplicate-free ranking of
  the candidate keys by construction (``constrained.py``). Nothing to re-ask.
* ``validated`` (e.g. a generic OpenAI-compatible server): decoding under a JSON
  schema where supported; the parser checks the permutation, the model is re-asked
  with the validation error at most ``listwise_retries`` times, then the verbalizer
  scores are used and the fallback is recorded.

With ``listwise_top_k = k`` only the best ``k`` are ranked; the others follow in the
verbalizer's order. Both paths parse with the same pydantic contract.

``probability`` is the model's own distribution over the candidates (``listwise_probabilities``):

* ``first_key`` (``auto`` picks it for constrained rankings with a plain verbalizer
  config): the model's distribution over the keys where the ranking's first key starts, read
  from the listwise pass itself, so a request costs one prefill plus at most one pass per
  ranked key, and no verbalizer pass (the transformers backend jumps over forced tokens and
  checks a drafted ranking in the prompt's pass: one pass in all when the model echoes).
  Labels are one token each, so the slot's next-token distribution is it; ids of several
  tokens need each id's later tokens, which the transformers backend scores in one packed
  pass on the prompt's cache (other backends return none, and the verbalizer pass runs);
* ``verbalizer``: a separate verbalizer pass (its permutations and label prior apply),
  computed up front; it doubles as the validated path's fallback.

``details["probabilities"]`` records which one a result used.

How a constrained ranking picks each key, ``details["key_choice"]`` (None on the validated path):
``token`` is greedy token by token, so a key of several tokens is committed to by its first
(the vLLM paths, labels); ``whole`` (the transformers backend for ids, ``listwise_key_choice``)
picks at each slot the open key most likely to be written whole, the same log-prob as
``first_key``'s, so the top-ranked id is also the one with the highest probability.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field

from ...configurable import ComponentConfig
from ...errors import CapabilityError, TooManyCandidatesError
from ...protocol import Fallback, RankRequest
from ...structured import ParseFailure, parse_ranking, ranking_schema
from ..base import LLMScorer, ScoreResult, softmax_logprobs
from .verbalizer import LABEL_ALPHABET, VerbalizerConfig, VerbalizerScorer


class ListwiseConfig(ComponentConfig):
    """Listwise knobs: ``settings.listwise`` (flat names ``listwise_<field>``), and the verbalizer pass it starts from."""

    settings_prefix = "listwise_"
    retries: int = Field(default=2, ge=0, le=5, description="re-asks after invalid output")
    max_tokens: int = Field(default=400, ge=16)
    decoding: Literal["auto", "constrained", "validated"] = "auto"
    keys: Literal["ids", "labels"] = Field(
        default="labels", description="labels A, B, ... (fewer tokens, and the probabilities from the same pass) or ids")
    top_k: int | None = Field(default=None, ge=1, description="rank only the best k (None: all)")
    probabilities: Literal["auto", "first_key", "verbalizer"] = Field(
        default="auto", description="auto: from the listwise pass where the backend gives them (constrained decoding), "
                                    "else a verbalizer pass")
    verbalizer: VerbalizerConfig = Field(default_factory=lambda: VerbalizerConfig())


class ListwiseScorer(LLMScorer):
    name = "listwise"
    config_class = ListwiseConfig
    config: ListwiseConfig

    def _decoding(self) -> str:
        wanted = self.config.decoding
        if wanted == "validated":
            return "validated"
        if self.backend.can_decode_permutations():
            return "constrained"
        if wanted == "constrained":
            raise CapabilityError(f"backend {self.backend.name!r} cannot constrain a ranking to a permutation; "
                                  "use listwise_decoding='auto' or 'validated'", param="listwise_decoding")
        return "validated"

    def _keys(self, request: RankRequest) -> list[str]:
        n = len(request.candidates)
        if self.config.keys == "ids":
            return [c.id for c in request.candidates]
        if n > len(LABEL_ALPHABET):
            raise TooManyCandidatesError(f"{n} candidates but only {len(LABEL_ALPHABET)} labels; send fewer or use "
                                         "listwise_keys='ids'", param="candidates")
        return list(LABEL_ALPHABET[:n])

    def _first_key(self, decoding: str) -> bool:
        """Whether to ask for the probabilities from the listwise pass (a backend may still return none)."""
        wanted = self.config.probabilities
        plain = self.config.verbalizer.permutations == 1 and not self.config.verbalizer.label_prior
        if wanted == "first_key" and decoding != "constrained":
            raise CapabilityError("listwise_probabilities='first_key' needs constrained decoding on this backend",
                                  param="listwise_probabilities")
        return decoding == "constrained" and (wanted == "first_key" or (wanted == "auto" and plain))

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        decoding = self._decoding()
        first_key = self._first_key(decoding)
        states = []
        for request in requests:
            key_name = "id" if self.config.keys == "ids" else "label"
            keys = self._keys(request)
            k = min(self.config.top_k or len(keys), len(keys))
            history = self.renderer.history_views(request.history)
            labels = keys if key_name == "label" else [None] * len(keys)
            views = [self.renderer.item_view(c, label=json.dumps(lab) if lab else None)
                     for c, lab in zip(request.candidates, labels)]
            context = {"candidates": views, "rank_k": k, "key_name": key_name}
            rendered = self.renderer.fit("listwise.j2", history, extra_tokens=self.config.max_tokens, **context)
            kept = history[len(history) - rendered.history_used :] if rendered.history_used else []
            messages = self.renderer.messages("listwise.j2", history=kept, **context)
            states.append({"keys": keys, "k": k, "messages": messages, "attempts": [], "ranking": None, "verb": None,
                           "key_name": key_name, "used": rendered.history_used, "notes": rendered.notes,
                           "first_key": first_key})

        if decoding == "constrained":
            self._constrained(states)
        # the verbalizer pass: probabilities where the listwise pass gave none, and the validated path's fallback
        need = [i for i, s in enumerate(states) if s["verb"] is None]
        if need:
            verbs = VerbalizerScorer(self.backend, self.renderer, config=self.config.verbalizer).score_many(
                [requests[i] for i in need])
            for i, verb in zip(need, verbs):
                states[i]["verb"] = verb
                states[i]["used"] = min(states[i]["used"], verb.history_used)
        if decoding != "constrained":
            self._validated(states)
        return [self._result(state, decoding) for state in states]

    def _constrained(self, states: list[dict]) -> None:
        prompts = [self.backend.chat_prompt(s["messages"]) for s in states]
        first = any(s["first_key"] for s in states)
        gens = self.backend.generate_permutations(prompts, [s["keys"] for s in states], [s["k"] for s in states],
                                                  key_logprobs=first)
        for state, gen in zip(states, gens):
            self._parse(state, gen)
            state["key_choice"] = gen.key_choice
            if state["first_key"] and gen.key_logprobs is not None:
                probs = softmax_logprobs(np.asarray(gen.key_logprobs))
                mass = float(np.exp(gen.key_logprobs).sum())
                state["verb"] = ScoreResult(scores=np.log(np.clip(probs, 1e-12, None)), probabilities=probs,
                                            history_used=state["used"], details={"label_mass": mass})
                state["probabilities"] = "first_key"

    def _validated(self, states: list[dict]) -> None:
        use_schema = self.backend.supports_json_schema
        for _round in range(self.config.retries + 1):
            pending = [s for s in states if s["ranking"] is None]
            if not pending:
                break
            prompts = [self.backend.chat_prompt(s["messages"]) for s in pending]
            schemas = [ranking_schema(s["keys"], s["k"]) if use_schema else None for s in pending]
            # Schemas differ per request; backends that can batch them do so.
            gens = self.backend.generate_batch(prompts, max_tokens=self.config.max_tokens, json_schemas=schemas)
            for state, gen in zip(pending, gens):
                error = self._parse(state, gen)
                if error is not None:
                    retry = self.renderer.render("listwise_retry.j2", error=error, ids=[f'"{i}"' for i in state["keys"]],
                                                 rank_k=state["k"], key_name=state["key_name"])
                    state["messages"] = state["messages"] + [
                        {"role": "assistant", "content": gen.text[:2000]},
                        {"role": "user", "content": retry.strip()},
                    ]

    @staticmethod
    def _parse(state: dict, gen) -> str | None:
        """Record the attempt; the validation error message if it failed."""
        try:
            state["ranking"] = parse_ranking(gen.text, state["keys"], state["k"])
            state["attempts"].append({"ok": True, "finish_reason": gen.finish_reason,
                                      "completion_tokens": gen.completion_tokens})
            return None
        except ParseFailure as exc:
            state["attempts"].append({"ok": False, "kind": exc.kind, "error": exc.message, "raw": gen.text[:2000],
                                      "finish_reason": gen.finish_reason})
            return exc.message

    @staticmethod
    def _result(state: dict, decoding: str) -> ScoreResult:
        verb: ScoreResult = state["verb"]
        n = len(state["keys"])
        details = {"attempts": state["attempts"], "label_mass": verb.details.get("label_mass"), "decoding": decoding,
                   "ranked": state["k"], "keys": state["key_name"] + "s",
                   "probabilities": state.get("probabilities", "verbalizer"), "key_choice": state.get("key_choice")}
        if state["ranking"] is None:
            last = state["attempts"][-1]
            fallback = Fallback(stage="listwise", reason=f"{last['kind']}: {last['error']}",
                                attempts=len(state["attempts"]), used="verbalizer")
            return ScoreResult(scores=verb.scores, probabilities=verb.probabilities, history_used=state["used"],
                               fallbacks=[fallback], notes=state["notes"], details=details | {"fallback": True})
        index = {key: i for i, key in enumerate(state["keys"])}
        ranked = [index[key] for key in state["ranking"]]
        chosen = set(ranked)
        order = ranked + [i for i in verb.ranking() if i not in chosen]  # top-k: the rest by probability
        scores = np.empty(n)
        for pos, cand in enumerate(order):
            scores[cand] = 1.0 - pos / max(n - 1, 1)  # 1.0 for the top, 0.0 for the last
        return ScoreResult(scores=scores, probabilities=verb.probabilities, history_used=state["used"], order=order,
                           notes=state["notes"], details=details | {"fallback": False})
