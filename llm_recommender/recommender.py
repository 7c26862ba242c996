"""The pipeline behind every door (Python API, CLI, server, eval harness).

request -> validate -> prompt rendering -> backend -> scorer -> calibrator
        -> ranked list -> (optional) reasons for the top-k -> RankResponse
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .backends import Backend, make_backend
from .backends.base import metered
from .backends.configs import OpenAIConfig, TransformersConfig, VLLMConfig
from .bundle import Bundle, BundleError
from .calibration import Calibrator, IdentityCalibrator, check_fitted_for, load_calibrator
from .coldstart import Basis, ColdStart, Resolved, no_signal_note
from .configurable import ComponentConfig
from .errors import CapabilityError, InvalidRequestError, UnknownNameError
from .explain import explain_ranking
from .explain.gate import ReasonGate
from .model_store import cache_dir
from .prompts import PromptRenderer
from .protocol import (
    HistoryEntry,
    Item,
    RankedItem,
    RankRequest,
    RankResponse,
    Usage,
    coerce_items,
    fill_history_titles,
    item_genres,
    parse_request,
)
from .scorers import FUSED, Scorer, ScoreResult, scorer_class, scorer_names
from .scorers.baselines.embedding import text_vectors
from .scorers.learned.encoder import ItemEncoder
from .settings import Settings

# Backend config fields that Settings keeps once at its top level (the rest: the backend's section).
SHARED_MODEL_FIELDS = ("model", "dtype", "tokenizer", "batch_size")


def component_config(settings: Settings, name: str) -> ComponentConfig:
    """THE one place a component's config is built from the pipeline's ``Settings``.

    ``name`` is a backend (``transformers``, ``vllm``, ``openai``), an LLM strategy
    (``verbalizer``, ``pointwise``, ``listwise``), ``prompt`` (the renderer) or ``reasons``.
    A strategy's, the renderer's and the reasons' config is their ``Settings`` section as
    it is; a backend's is its section plus the model fields ``Settings`` keeps at its top
    level (and, for vLLM, the verbalizer's seed as the engine's). Components never see
    ``Settings``: each is constructed from what this returns.
    """
    backends: dict[str, type[ComponentConfig]] = {
        "transformers": TransformersConfig, "vllm": VLLMConfig, "openai": OpenAIConfig}
    if name in backends:
        cls = backends[name]
        shared = {k: getattr(settings, k) for k in SHARED_MODEL_FIELDS if k in cls.model_fields}
        if "permutation_seed" in cls.model_fields:
            shared["permutation_seed"] = settings.verbalizer.permutation_seed
        return cls.model_validate({**shared, **getattr(settings, name).model_dump()})
    if name in ("prompt", "reasons", "verbalizer", "pointwise", "listwise"):
        return getattr(settings, name)
    raise UnknownNameError("component", name, [*backends, "prompt", "reasons", "verbalizer", "pointwise", "listwise"],
                           param="component")


def settings_of(name: str, config: ComponentConfig) -> dict[str, Any]:
    """The inverse of :func:`component_config`: ``Settings`` fields (nested) that give ``config`` back."""
    data = config.model_dump()
    section = getattr(Settings.model_fields[name].annotation, "model_fields", {})
    top = {k: data.pop(k) for k in list(data) if k not in section}
    if "permutation_seed" in top:  # vLLM's engine seed is the verbalizer's
        top["verbalizer"] = {"permutation_seed": top.pop("permutation_seed")}
    return {**top, name: data}


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
    templates is an error. Other keyword arguments are :class:`Settings` fields. ``Recommender.load(BUNDLE)`` serves a bundle
    fitted by ``llm-rec fit``: its default strategy is the fused ranking, and requests
    may omit ``candidates`` (the bundle retrieves them from its catalogue).

    The LLM backend is created on first use: ranking with a bundle's fitted components
    alone never loads the model.
    """

    bundle: Any = None
    _cold_start: ColdStart | None = None

    def __init__(
        self,
        model: str | None = None,
        backend: str | Backend | None = None,
        strategy: str | None = None,
        calibrator: str | Path | Calibrator | None = None,
        settings: Settings | None = None,
        bundle: Any = None,
        calibrators: Mapping[str, str | Path | Calibrator] | None = None,
        **overrides: Any,
    ) -> None:
        base = settings or Settings()
        update = {k: v for k, v in {"model": model, "strategy": strategy, **overrides}.items() if v is not None}
        if isinstance(backend, str):
            update["backend"] = backend
        self.settings = base.updated(**update)
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._renderer: PromptRenderer | None = None
        self._genres: list[str] | None = None
        self._scorers: dict[str, Scorer] = {}
        self._reason_gates: dict[str, ReasonGate] = {}
        if bundle is not None:
            self._attach_bundle(bundle)
        self._check_strategy(self.settings.strategy, param="strategy")
        self.calibrators = self._bind_calibrators(calibrator, calibrators)
        if self._backend is None and scorer_class(self.settings.strategy).needs_llm:
            self.backend  # noqa: B018 - an LLM strategy by default: load the model now, fail fast

    @classmethod
    def load(cls, bundle: str | Path, *, text_encoder: Any = None,
             component_config: Mapping[str, Mapping[str, Any]] | None = None, **kwargs: Any) -> Recommender:
        """A recommender serving the bundle at ``bundle`` (see ``llm-rec fit``).

        ``component_config``: per component, how it scores here (see :meth:`Bundle.load`), e.g.
        ``{"llm_ranker": {"backend": "openai", "server": {"base_url": URL}}}`` for a ranker served by
        ``llm-rec serve-model --bundle``.

        ``text_encoder`` (texts -> vectors) must be given when the bundle was fitted with a
        custom one instead of MiniLM, so that items it has never seen can be embedded the same way.
        """
        given = kwargs.get("settings")
        template_dir = kwargs.get("template_dir") or (given.prompt.template_dir if given is not None else None)
        loaded = Bundle.load(bundle, template_dir=template_dir, component_config=component_config)
        kwargs.setdefault("model", loaded.manifest.model)
        kwargs.setdefault("strategy", FUSED)
        rec = cls(bundle=loaded, **kwargs)
        if "minilm" in loaded.space.vectors and (
            text_encoder is not None or loaded.manifest.representation.get("text_encoder") != "custom"
        ):
            loaded.space.set_encoder("minilm", lambda: text_vectors(text_encoder))
        return rec

    def _attach_bundle(self, bundle: Any) -> None:
        self.bundle = bundle
        self._cold_start = None
        if "llm" in bundle.space.vectors:
            bundle.space.set_encoder("llm", self._llm_item_encoder)

    def _llm_item_encoder(self) -> Any:
        """Encodes items the bundle has never seen with this recommender's LLM (checked against the bundle)."""
        backend = self.backend
        if not backend.supports_hidden_states:
            raise CapabilityError(
                f"items the bundle has not seen are represented with the LLM's hidden states: backend "
                f"{backend.name!r} has none (use the transformers backend)", param="backend")
        rep = self.bundle.manifest.representation
        enc = ItemEncoder.from_backend(backend, self.renderer, layer=rep.get("layer"), pooling=rep.get("pooling", "mean"))
        if enc.model_fingerprint() != self.bundle.manifest.model_fingerprint:
            raise BundleError(
                f"the bundle was fitted with model {self.bundle.manifest.model!r}; the loaded model "
                f"{backend.model_name!r} is a different one (fingerprint mismatch): its representations would not "
                "match. Load the bundle's model or fit a new bundle", param="model")
        return enc.encode_items

    def config_for(self, name: str, **changes: Any) -> ComponentConfig:
        """The config of component ``name`` (backend, LLM strategy, ``prompt``, ``reasons``) from these
        settings, or from a copy with ``changes`` (``Settings`` fields) applied."""
        return component_config(self.settings.updated(**changes) if changes else self.settings, name)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            name = self.settings.backend
            secrets = {"api_key": self.settings.api_key} if name == "openai" else {}
            self._backend = make_backend(name, self.config_for, **secrets)
        return self._backend

    @property
    def renderer(self) -> PromptRenderer:
        if self._renderer is None:
            self._renderer = PromptRenderer(self.backend, self.config_for("prompt"))  # type: ignore[arg-type]
        return self._renderer

    def strategy_names(self) -> list[str]:
        """Every strategy this recommender can rank with: the LLM strategies, and with a bundle its own
        (fused, its components) and the registered ones it can serve unfitted (random)."""
        if self.bundle is None:
            return scorer_names(needs_llm=True)
        return list(dict.fromkeys([*self.bundle.strategies, *scorer_names(needs_fit=False)]))

    def check_strategy(self, name: str, param: str = "strategy") -> None:
        """A typed error listing the valid strategies when ``name`` is not one of them."""
        self._check_strategy(name, param)

    def _check_strategy(self, name: str, param: str) -> None:
        if name not in self.strategy_names():
            hint = [] if self.bundle is not None else [FUSED + " and the components (with a bundle)"]
            raise UnknownNameError("strategy", name, [*self.strategy_names(), *hint], param=param)

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
            self._check_strategy(strategy, param=param)
            cal = source if isinstance(source, Calibrator) else load_calibrator(source)
            check_fitted_for(cal, self.calibration_key(strategy), param=param)
            bound[strategy] = cal
        return bound

    @property
    def model_name(self) -> str:
        return self._backend.model_name if self._backend is not None else self.settings.model

    @property
    def backend_name(self) -> str:
        return self._backend.name if self._backend is not None else "none"

    def engine_of(self, strategy: str) -> tuple[str, str]:
        """(model, backend) that scored ``strategy``: a bundle component that carries its own LLM (the trained
        ranker) names its own, also inside the fused ranking where the fit kept it; else the pipeline's."""
        if self.bundle is not None:
            names = self.bundle.fused.fusion.components if strategy == FUSED else [strategy]
            for name in names:
                engine: Any = getattr(self.bundle.components.get(name), "engine", None)
                if engine is not None:
                    pair: tuple[str, str] = engine()
                    return pair
        return self.model_name, self.backend_name

    def scorer(self, strategy: str | None = None) -> Scorer:
        """The scorer for ``strategy``: ONE lookup for bundle strategies and LLM strategies."""
        name = strategy or self.settings.strategy
        if name not in self._scorers:
            found = self.bundle.scorer(name) if self.bundle is not None else None
            if found is None:
                self._check_strategy(name, param="strategy")
                cls = scorer_class(name)
                if cls.needs_llm:
                    found = cls(self.backend, self.renderer, self.config_for(name))  # type: ignore[call-arg]
                else:  # a component with nothing to fit (random), on the bundle's items
                    found = cls(self.bundle.space)  # type: ignore[call-arg, union-attr]
            self._scorers[name] = found
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
        request = parse_request(
            {"history": [h.model_dump(exclude_unset=True) for h in hist], "candidates": [c.model_dump() for c in cands],
             "top_k": top_k, "reasons": reasons, "strategy": strategy}
        )
        return self.rank_request(request)

    def rank_pool(self, history: list[HistoryEntry], pool: list[Item], top_k: int,
                  reasons: bool | Literal["evidence", "llm"] = False) -> RankResponse:
        """Rank the best ``top_k`` of a (possibly large) pool: the bundle retrieves from it, then ranks."""
        if self.bundle is None:
            raise InvalidRequestError("ranking a pool of items needs a bundle (Recommender.load)", param="candidates")
        resolved, basis = self._prepare(RankRequest(history=history))
        wanted = max(top_k, self.settings.retrieve_candidates)
        if basis == "popularity":  # nothing known of the user: the pool's most popular items
            found = self.cold_start.popular(wanted, pool=pool, exclude=[h.id for h in resolved.request.history])
        else:
            found = self.bundle.retrieve(resolved.request.history, wanted, pool=pool)
        return self.rank_request(RankRequest(history=history, candidates=found, top_k=min(top_k, len(found)) or 1,
                                             reasons=reasons))

    def rank_request(self, request: RankRequest | dict[str, Any]) -> RankResponse:
        return self.rank_many([request])[0]

    def rank_many(self, requests: Sequence[RankRequest | dict[str, Any]]) -> list[RankResponse]:
        """Rank many requests; requests sharing a strategy are scored as one batch.

        A request without candidates gets them from the bundle's catalogue (retrieval:
        the fused ranking over every item not in the history), then ranks them.
        """
        prepared = [self._prepare(fill_history_titles(parse_request(r), self._catalogue_item)) for r in requests]
        scored = [i for i, (_, basis) in enumerate(prepared) if basis != "popularity"]
        answers = dict(zip(scored, self._score_many([self._with_candidates(prepared[i][0].request) for i in scored])))
        out = []
        for i, (resolved, basis) in enumerate(prepared):
            if basis == "popularity":  # cold start: no known history to score from
                request, result = self.cold_start.ranking(resolved)
                answers[i] = self._respond(request, result, "popularity", (0, 0, 0), IdentityCalibrator())
            elif basis == "none":
                resolved.notes.append(no_signal_note(resolved.request, self.bundle is not None))
            out.append(answers[i].model_copy(update={"basis": basis, "notes": [*resolved.notes, *answers[i].notes]}))
        return out

    def _score_many(self, parsed: list[RankRequest]) -> list[RankResponse]:
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
    @property
    def cold_start(self) -> ColdStart:
        """History linking by title and the popularity answer for the bundle (see :mod:`.coldstart`)."""
        if self._cold_start is None:
            if self.bundle is None:
                raise InvalidRequestError("a cold-start answer needs a bundle (Recommender.load)", param="history")
            self._cold_start = ColdStart(self.bundle)
        return self._cold_start

    def _prepare(self, request: RankRequest) -> tuple[Resolved, Basis]:
        """The request with its history linked to the catalogue, and what its ranking can rest on.

        With a bundle, a request whose history holds no item the catalogue knows gets the popularity
        answer; an LLM strategy still reads a non-empty history's text, so only an empty one is cold for it.
        """
        strategy = request.strategy or self.settings.strategy
        self._check_strategy(strategy, param="strategy")
        if self.bundle is None:
            return Resolved(request, len(request.history)), "history" if request.history else "none"
        resolved = self.cold_start.resolve(request)
        if resolved.known or (request.history and strategy not in self.bundle.strategies):
            return resolved, "history"
        return resolved, "popularity" if self.cold_start.popularity is not None else "none"

    @property
    def _catalogue_item(self) -> Callable[[str], Item | None] | None:
        """id -> the bundle's catalogue item (None without a bundle): titles for title-less history entries."""
        if self.bundle is None:
            return None
        space = self.bundle.space
        return lambda item_id: space.items[space.index[item_id]] if item_id in space.index else None

    def _with_candidates(self, request: RankRequest) -> RankRequest:
        if request.candidates:
            return request
        if self.bundle is None:
            raise InvalidRequestError(
                "candidates must not be empty (a recommender loaded from a bundle retrieves them from its catalogue)",
                param="candidates")
        found = self.bundle.retrieve(request.history, max(request.top_k, self.settings.retrieve_candidates))
        if not found:
            raise InvalidRequestError("the catalogue has no item outside the history to recommend", param="candidates")
        return request.model_copy(update={"candidates": found})

    def known_genres(self, request: RankRequest) -> list[str]:
        """The genre vocabulary a reason is checked against: the bundle's catalogue, else this request's items."""
        if self.bundle is not None:
            if self._genres is None:
                self._genres = sorted({g for it in self.bundle.space.items for g in item_genres(it)})
            return self._genres
        return sorted({g for it in [*request.candidates, *request.history] for g in item_genres(it)})

    def reason_gate(self) -> ReasonGate:
        """Whether this model's LLM reasons survive the filter: one gate per model, its verdict kept in the cache
        folder so that a later process (a CLI call) does not pay to measure it again."""
        if self.model_name not in self._reason_gates:
            # a scripted fake's replies say nothing about a model: its verdict stays in this process
            scripted = self._backend is not None and self._backend.name == "fake"
            self._reason_gates[self.model_name] = ReasonGate() if scripted else ReasonGate.for_model(self.model_name, cache_dir())
        return self._reason_gates[self.model_name]

    def _respond(self, request: RankRequest, result: ScoreResult, strategy: str, scoring_usage: tuple[int, ...],
                 calibrator: Calibrator | None = None) -> RankResponse:
        calibrator = calibrator or self.calibrator_for(strategy)
        probs = calibrator.transform(result.scores, result.probabilities)
        order = result.ranking()[: min(request.top_k, len(request.candidates))]
        why = explain_ranking(self, request, result, order, [float(probs[i]) for i in order])
        items = [RankedItem(id=request.candidates[i].id, title=request.candidates[i].title, rank=r + 1,
                            score=float(result.scores[i]), probability=float(probs[i]), reason=why.reasons[r],
                            evidence=why.evidence[r]) for r, i in enumerate(order)]
        fallbacks = [*result.fallbacks, *why.fallbacks]
        truncated = self._renderer.truncated_texts(request) if self._renderer is not None else 0
        notes = [*result.notes, *why.notes]
        if truncated:  # this request's own texts, not the batch's
            notes.append(f"{truncated} item text(s) were longer than the prompt limits and were truncated")
        usage = dict(zip(("prompt_tokens", "completion_tokens", "forward_passes"), scoring_usage))
        model, backend = self.engine_of(strategy)
        return RankResponse(
            items=items, strategy=strategy, model=model, backend=backend,
            calibrator=calibrator.name, fallback_used=bool(fallbacks), fallbacks=fallbacks,
            history_used=result.history_used, history_total=len(request.history), notes=notes,
            usage=Usage(**{k: v + r for (k, v), r in zip(usage.items(), why.usage.snapshot())}))


def split_usage(spent: tuple[int, int, int], own: list[tuple[int, int, int] | None]) -> list[tuple[int, ...]]:
    """Per-request usage of one batch: a request's own where the scorer measured it, else an
    even share of the rest (remainders to the first requests), so the parts add up to ``spent``."""
    rest = [s - sum(u[k] for u in own if u is not None) for k, s in enumerate(spent)]
    shared = [i for i, u in enumerate(own) if u is None]
    out: list[tuple[int, ...]] = [u or (0, 0, 0) for u in own]
    for rank, i in enumerate(shared):
        out[i] = tuple(x // len(shared) + (rank < x % len(shared)) for x in rest)
    return out
