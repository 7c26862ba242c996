"""Scoring evaluation cases through the served pipeline.

* Bundle strategies (``fused`` and each fitted component) are ranked with
  ``Recommender.rank_many`` exactly as a user's request would be; the response is turned
  back into scores aligned with the case's candidates (:func:`response_to_result`).
* LLM strategies go through the same Recommender's scorer and are cached per case in
  ``OUT/cache/<strategy>.jsonl`` (see :mod:`.cache`): an interrupted run resumes and a
  rerun costs nothing. Permutation averaging is the scorer's own (``permutations``
  setting), never re-implemented here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..data.splits import EvalCase
from ..protocol import RankResponse
from ..scorers.base import ScoreResult
from .cache import ResultCache, case_key


class RunStopped(Exception):
    """Raised when ``stop_after`` new LLM requests were scored (tests use it to simulate an interruption)."""


def response_to_result(response: RankResponse, case: EvalCase, keep_order: bool = False) -> ScoreResult:
    """The ranked response as scores/probabilities aligned with ``case``'s candidates.

    ``keep_order``: also keep the response's order (listwise: scored exactly as returned);
    otherwise metrics rank by score, with ties never favouring the ground truth.
    """
    pos = {cid: k for k, cid in enumerate(case.candidate_ids)}
    n = len(pos)
    scores, probs = np.zeros(n), np.zeros(n)
    order = []
    for item in response.items:
        k = pos[item.id]
        scores[k], probs[k] = item.score, item.probability
        order.append(k)
    return ScoreResult(scores=scores, probabilities=probs, history_used=response.history_used,
                       order=order if keep_order else None,
                       fallbacks=list(response.fallbacks), notes=list(response.notes))


def rank_cases(rec: Any, strategy: str, cases: Sequence[EvalCase], batch: int = 64) -> list[tuple[ScoreResult, float]]:
    """Rank every case with ``rec`` (all candidates returned); (result, seconds per request)."""
    out: list[tuple[ScoreResult, float]] = []
    for start in range(0, len(cases), batch):
        part = cases[start : start + batch]
        reqs = [c.request.model_copy(update={"top_k": len(c.request.candidates), "strategy": strategy}) for c in part]
        t0 = time.perf_counter()
        responses = rec.rank_many(reqs)
        per = (time.perf_counter() - t0) / len(part)
        out += [(response_to_result(r, c), per) for r, c in zip(responses, part)]
    return out


def cache_signature(strategy: str, model: str, scorer: Any) -> dict[str, Any]:
    """The cache signature of an LLM scorer (see :meth:`LLMCaseScorer.signature`)."""
    backend = scorer.backend
    backend_config = getattr(backend, "config", None)
    return {
        "strategy": strategy,
        "model": model,
        "backend": backend.name,
        "backend_config": backend_config.score_key() if backend_config is not None else None,
        "scorer": scorer.config.score_key(),
        "prompt": scorer.renderer.config.score_key(),
        "templates": scorer.renderer.template_hash(),
    }


class LLMCaseScorer:
    """LLM strategy outputs per case, through an on-disk cache; counts new requests for ``stop_after``."""

    def __init__(self, rec: Any, out: Path, *, batch_size: int, stop_after: int | None, progress: bool,
                 log: Callable[[str], None]) -> None:
        self.rec = rec
        self.out = out
        self.batch_size = batch_size
        self.stop_after = stop_after
        self.progress = progress
        self.log = log
        self.new_requests = 0
        self._caches: dict[str, ResultCache] = {}

    def signature(self, strategy: str, scorer: Any) -> dict[str, Any]:
        """What the scores depend on: the JSON of the configs of the scorer, its prompt renderer
        (and the templates' hash) and the backend (less what only changes speed), so an
        unrelated setting shares the cache and a changed option is a miss."""
        return cache_signature(strategy, self.rec.model_name, scorer)

    def cache(self, strategy: str) -> ResultCache:
        if strategy not in self._caches:
            self._caches[strategy] = ResultCache(self.out / "cache" / f"{strategy}.jsonl")
        return self._caches[strategy]

    def score(self, strategy: str, cases: Sequence[EvalCase], *, scorer: Any = None, desc: str = "",
              cache_name: str | None = None) -> list[tuple[ScoreResult, float]]:
        scorer = scorer if scorer is not None else self.rec.scorer(strategy)
        cache = self.cache(cache_name or strategy)
        sig = self.signature(strategy, scorer)
        keys = [case_key(c, sig) for c in cases]
        todo = list({k: c for k, c in zip(keys, cases) if k not in cache}.items())
        if todo:
            self._score_missing(scorer, cache, todo, desc or strategy)
        return [cache.get(k) for k in keys]

    def _score_missing(self, scorer: Any, cache: ResultCache, todo: list[tuple[str, EvalCase]], desc: str) -> None:
        bar = None
        if self.progress:
            bar = tqdm(total=len(todo), desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
        try:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                stop = self.stop_after is not None and self.new_requests + len(batch) > self.stop_after
                if stop:
                    batch = batch[: max(0, self.stop_after - self.new_requests)]  # type: ignore[operator]
                if batch:
                    t0 = time.perf_counter()
                    results = scorer.score_many([c.request for _, c in batch])
                    per = (time.perf_counter() - t0) / len(batch)
                    cache.put_many([(k, r, per) for (k, _), r in zip(batch, results)])
                    self.new_requests += len(batch)
                    if bar is not None:
                        bar.update(len(batch))
                if stop:
                    raise RunStopped(f"stopped after {self.stop_after} new LLM requests (rerun to resume)")
        finally:
            if bar is not None:
                bar.close()
