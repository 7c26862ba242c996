"""THE one entry point for reasons: ``Recommender._respond`` calls :func:`explain_ranking` once per response.

Which reasons an answer gets:

* a ranking that sets its own (``result.details["reasons"]``, one per candidate: the cold-start popularity
  answer) has them used as they are: the hook for rankings whose basis is not the history;
* a fused bundle ranking has evidence (:func:`gather_evidence`, kept components only); ``reasons=True``
  or ``"evidence"`` renders it (:func:`evidence_reasons`), ``"llm"`` lets the LLM phrase it, replies the
  filter rejects falling back to the evidence text, and a :class:`ReasonGate` per model stops generating
  when most are rejected (one note per response says so);
* an LLM strategy (no evidence) with ``reasons=True``/``"llm"``: the LLM's own reasons under the same gate,
  a rejected one replaced by what the request itself shows (:func:`request_reasons`); ``"evidence"``:
  :func:`request_reasons` directly. Every item asked for a reason gets a true one, or a sentence saying
  plainly why there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import UsageMeter, metered
from ..data.words import NEUTRAL, ItemWords, words_from
from ..protocol import Evidence, Fallback, RankRequest
from ..scorers.base import ScoreResult
from .evidence import gather_evidence
from .llm_reasons import llm_evidence_reasons, llm_request_reasons
from .reasons import evidence_reasons, request_reasons


@dataclass
class Explanation:
    reasons: list[str | None]
    evidence: list[Evidence | None]
    fallbacks: list[Fallback] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    usage: UsageMeter = field(default_factory=UsageMeter)


def bundle_words(bundle: Any) -> ItemWords:
    return words_from(getattr(bundle.manifest, "item_words", None)) if bundle is not None else NEUTRAL


def explain_ranking(rec: Any, request: RankRequest, result: ScoreResult, order: Sequence[int],
                    probabilities: Sequence[float]) -> Explanation:
    """Evidence and reasons for the ranked items ``order`` (candidate indices) of ``request``.

    ``rec`` is the :class:`~llm_recommender.recommender.Recommender` (its bundle, backend, renderer, reason
    config, genre vocabulary and reason gates); ``probabilities``: the ranked items' calibrated P, in order.
    """
    top = [request.candidates[i] for i in order]
    bundle = rec.bundle
    evidence: list[Evidence | None] = [None] * len(top)
    if "contributions" in result.details and bundle is not None:
        evidence = list(gather_evidence(bundle, request, result, list(order)))
    out = Explanation(reasons=[None] * len(top), evidence=evidence)
    if not request.reasons or not top:
        return out
    own = result.details.get("reasons")
    if own is not None:  # the hook: a ranking that is not from the history (cold start) words its own reasons
        out.reasons = [own[i] for i in order]
        return out
    words = bundle_words(bundle)
    ev = [e for e in evidence if e is not None]
    if ev:
        texts = evidence_reasons(top, ev, rec.settings.prompt.template_dir, words=words, history=request.history,
                                 probabilities=probabilities)
    else:
        texts = request_reasons(top, request.history, words, probabilities)
    out.reasons = list(texts)
    mode = request.reasons if isinstance(request.reasons, str) else ("evidence" if ev else "llm")
    if mode == "evidence":
        return out
    gate = rec.reason_gate()
    if not gate.off:
        with metered() as out.usage:
            common = (rec.backend, rec.renderer, rec.config_for("reasons"), request, top)
            if ev:
                out.reasons[:], fallbacks = llm_evidence_reasons(*common, ev, rec.known_genres(request),
                                                                 fallback_texts=texts, gate=gate, words=words)
            else:
                out.reasons[:], fallbacks = llm_request_reasons(*common, rec.known_genres(request),
                                                                fallback_texts=texts, gate=gate)
        out.fallbacks += fallbacks
    if gate.off:
        gate.warn_once(rec.model_name)
        out.notes.append(gate.note(rec.model_name))
    return out
