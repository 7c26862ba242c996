"""The pipeline behind every door (Python API, CLI, server, eval harness).

request -> validate -> prompt rendering -> backend -> scorer -> calibrator
        -> ranked list -> (optional) reasons for the top-k -> RankResponse
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .backends import Backend, make_backend
from .backends.base import UsageMeter, metered
from .calibration import Calibrator, IdentityCalibrator, check_fitted_for, load_calibrator
from .errors import InvalidRequestError, from_validation_error
from .prompts import PromptRenderer
from .protocol import HistoryEntry, Item, RankedItem, RankRequest, RankResponse, Usage, coerce_items, parse_request
from .reasons import generate_reasons
from .scorers import LLMScorer, ScoreResult, strategy_class
from .settings import Settings


class Recommender:
    """Rank candidate items for a user with an LLM.

    >>> rec = Recommender()                          # embedded SmolLM2, transformers, verbalizer
    >>> rec.rank(history=[{"id": "1", "title": "Toy Story (1995)"}],
    ...          candidates=[{"id": "2", "title": "Heat (1995)"}, {"id": "3", "title": "Babe (1995)"}],
    ...          top_k=2, reasons=True)

    ``backend`` is a registered name or a :class:`Backend` instance; ``calibrator`` a
    :class:`Calibrator` or the path of a fitted calibrator JSON file, for the default
    strategy; ``calibrators`` maps strategies to theirs (``{"pointwise": path, ...}``). A
    strategy without one gets identity, and a file fitted for another strategy, model or
    templates is an error. Other keyword arguments are :class:`Settings` fields.
    """

    def __init__(
        self,
        model: str | None = None,
        backend: str | Backend | None = None,
        strategy: str | None = None,
        calibrator: str | Path | Calibrator | None = None,
        settings: Settings | None = None,
        calibrators: Mapping[str, str | Path | Calibrator] | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings()
        update = {k: v for k, v in {"model": model, "strategy": strategy, **overrides}.items() if v is not None}
        if isinstance(backend, str):
            update["backend"] = backend
        try:
            self.settings = Settings.model_validate(base.model_dump() | update)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        strategy_class(self.settings.strategy)  # fail fast on an unknown default strategy
        if isinstance(backend, Backend):
            self.backend = backend
        else:
            self.backend = make_backend(self.settings.backend, self.settings)
        self.renderer = PromptRenderer(self.backend, self.settings)
        self.calibrators = self._bind_calibrators(calibrator, calibrators)
        self._scorers: dict[str, LLMScorer] = {}

    @property
    def calibrator(self) -> Calibrator:
        """The default strategy's calibrator."""
        return self.calibrator_for(self.settings.strategy)

    def calibrator_for(self, strategy: str) -> Calibrator:
        """A strategy's own calibrator; identity where none was fitted for it (never another's)."""
        return self.calibrators.get(strategy) or IdentityCalibrator()

    def calibration_key(self, strategy: str) -> dict[str, str]:
        """What a calibrator fitted on this strategy's scores records in ``fitted_for``."""
        return {"strategy": strategy, "model": self.model_name, "template_hash": self.renderer.template_hash()}

    def _bind_calibrators(
        self, default: str | Path | Calibrator | None, per_strategy: Mapping[str, str | Path | Calibrator] | None
    ) -> dict[str, Calibrator]:
        wanted: dict[str, tuple[str | Path | Calibrator, str]] = {
            k: (v, f"calibrators.{k}") for k, v in {**self.settings.calibrators, **(per_strategy or {})}.items()
        }
        if default is not None or self.settings.calibrator is not None:  # `calibrator=`: the default strategy's
            wanted[self.settings.strategy] = (default or self.settings.calibrator, "calibrator")  # type: ignore[assignment]
        bound = {}
        for strategy, (source, param) in wanted.items():
            strategy_class(strategy)
            cal = source if isinstance(source, Calibrator) else load_calibrator(source)
            check_fitted_for(cal, self.calibration_key(strategy), param=param)
            bound[strategy] = cal
        return bound

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def scorer(self, strategy: str | None = None) -> LLMScorer:
        name = strategy or self.settings.strategy
        if name not in self._scorers:
            self._scorers[name] = strategy_class(name)(self.backend, self.renderer, self.settings)
        return self._scorers[name]

    # ---- doors ------------------------------------------------------------------
    def rank(
        self,
        history: Iterable[HistoryEntry | Item | dict[str, Any]] = (),
        candidates: Iterable[Item | dict[str, Any]] = (),
        top_k: int = 10,
        reasons: bool = False,
        strategy: str | None = None,
    ) -> RankResponse:
        """Rank ``candidates`` for a user with ``history``; plain dicts or models accepted."""
        hist = coerce_items(history, HistoryEntry, "history")
        cands = coerce_items(candidates, Item, "candidates")
        if not cands:
            raise InvalidRequestError("candidates must not be empty", param="candidates")
        request = parse_request(
            {"history": [h.model_dump() for h in hist], "candidates": [c.model_dump() for c in cands],
             "top_k": top_k, "reasons": reasons, "strategy": strategy}
        )
        return self.rank_request(request)

    def rank_request(self, request: RankRequest | dict[str, Any]) -> RankResponse:
        return self.rank_many([request])[0]

    def rank_many(self, requests: list[RankRequest | dict[str, Any]]) -> list[RankResponse]:
        """Rank many requests; requests sharing a strategy are scored as one batch."""
        parsed = [parse_request(r) for r in requests]
        results: list[ScoreResult | None] = [None] * len(parsed)
        by_strategy: dict[str, list[int]] = {}
        for i, req in enumerate(parsed):
            by_strategy.setdefault(req.strategy or self.settings.strategy, []).append(i)
        shares: list[tuple[int, ...]] = [(0, 0, 0)] * len(parsed)
        for name, idxs in by_strategy.items():
            scorer = self.scorer(name)
            with metered() as meter:  # this call's own backend usage, whatever runs beside it
                scored = scorer.score_many([parsed[i] for i in idxs])
            for i, res in zip(idxs, scored):
                results[i] = res
            for i, share in zip(idxs, split_usage(meter.snapshot(), [r.usage for r in scored])):
                shares[i] = share
        return [
            self._respond(req, res, req.strategy or self.settings.strategy, share)  # type: ignore[arg-type]
            for req, res, share in zip(parsed, results, shares)
        ]

    # ---- assembly -----------------------------------------------------------------
    def _respond(self, request: RankRequest, result: ScoreResult, strategy: str, scoring_usage: tuple[int, ...]) -> RankResponse:
        reasons_meter = UsageMeter()
        calibrator = self.calibrator_for(strategy)
        probs = calibrator.transform(result.scores, result.probabilities)
        order = result.ranking()[: min(request.top_k, len(request.candidates))]
        top = [request.candidates[i] for i in order]
        fallbacks = list(result.fallbacks)
        reason_texts: list[str | None] = [None] * len(top)
        if request.reasons:
            with metered() as reasons_meter:
                reason_texts, reason_fallbacks = generate_reasons(self.backend, self.renderer, self.settings, request, top)
            fallbacks += reason_fallbacks
        items = [
            RankedItem(id=c.id, title=c.title, rank=r + 1, score=float(result.scores[i]),
                       probability=float(probs[i]), reason=reason_texts[r])
            for r, (i, c) in enumerate(zip(order, top))
        ]
        notes = list(result.notes)
        truncated = self.renderer.truncated_texts(request)  # this request's own texts, not the batch's
        if truncated:
            notes.append(f"{truncated} item text(s) were longer than the prompt limits and were truncated")
        return RankResponse(
            items=items,
            strategy=strategy,
            model=self.model_name,
            backend=self.backend.name,
            calibrator=calibrator.name,
            fallback_used=bool(fallbacks),
            fallbacks=fallbacks,
            history_used=result.history_used,
            history_total=len(request.history),
            notes=notes,
            usage=Usage(**{k: s + r for k, s, r in zip(("prompt_tokens", "completion_tokens", "forward_passes"),
                                                          scoring_usage, reasons_meter.snapshot())}),
        )


def split_usage(spent: tuple[int, int, int], own: list[tuple[int, int, int] | None]) -> list[tuple[int, ...]]:
    """Per-request usage of one batch: a request's own where the scorer measured it, else an
    even share of the rest (remainders to the first requests), so the parts add up to ``spent``."""
    rest = [s - sum(u[k] for u in own if u is not None) for k, s in enumerate(spent)]
    shared = [i for i, u in enumerate(own) if u is None]
    out: list[tuple[int, ...]] = [u or (0, 0, 0) for u in own]
    for rank, i in enumerate(shared):
        out[i] = tuple(x // len(shared) + (rank < x % len(shared)) for x in rest)
    return out
