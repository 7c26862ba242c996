"""The evaluation runner behind ``llm-rec eval``: fit (or load) a bundle, rank the cases through it, measure.

One run, for one dataset and seed:

1. **Cases.** The candidate-ranking cases for the *validation* and the *test* target of
   the same sampled users: the LLMRank protocol (:func:`llmrank_cases`) or the cold-start
   protocol (:func:`cold_start_cases`: targets and candidates are items kept out of
   training). With ``calibration_protocol`` ``likes``/``both`` also the like/dislike cases
   (the target alone, label = rating > 3).
2. **The bundle.** ``llm-rec fit`` on the same dataset and splits (training split only;
   cold items removed for the cold-start protocol), written to ``OUT/bundle`` and reused by
   a rerun, or the bundle given with ``--bundle``. Every scorer is then a strategy of ONE
   ``Recommender``: ``fused`` and each fitted component through ``rank_many`` exactly as
   served; the zero-shot LLM strategies through the same Recommender's scorers, cached per
   case (:mod:`.scoring`).
3. **Calibration.** Platt, temperature and isotonic are fitted on each scorer's
   *validation* outputs only and applied to its test outputs (:mod:`.calibration_eval`).
   ``fused`` needs none: its fusion was fitted on validation targets, so its own
   probabilities are the 'uncalibrated' column.
4. **Metrics.** NDCG/HR/MRR on the test cases (ties never favour the ground truth),
   AUC, log loss, Brier and ECE before and after each calibrator, listwise failure shares,
   seconds per user, and optionally the position-bias sweep (:mod:`.sweep`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..bundle import FitConfig, fit_bundle, read_manifest
from ..bundle.fit import DEFAULT_COMPONENTS, available_components
from ..data import dataset_names, load_dataset
from ..data.base import RecDataset
from ..data.splits import (
    EvalCase,
    UserSplit,
    cold_start_cases,
    cold_start_items,
    leave_one_out,
    llmrank_cases,
    pointwise_cases,
)
from ..errors import BundleError, InvalidRequestError, UnknownNameError
from ..metrics import expected_random, ranking_metrics, target_rank
from ..provenance import git_commit
from ..recommender import Recommender
from ..scorers import FUSED, ScoreResult, scorer_class, scorer_names
from .calibration_eval import CALIBRATOR_NAMES, evaluate_scorer
from .plots import write_plots
from .record import definitions
from .report import write_report
from .scoring import LLMCaseScorer, RunStopped, rank_cases
from .sweep import position_sweep

LLM_NAMES = tuple(scorer_names(needs_llm=True))
PROTOCOLS = ("llmrank", "cold-start")
CALIBRATION_PROTOCOLS = ("llmrank", "likes", "both")
POSITION_STRATEGIES = ("verbalizer", "listwise")  # pointwise scores each candidate alone: no position
DEFAULT_SCORERS = ("random", FUSED, "popularity", "cooccurrence", "itemknn", "als", "bpr", "embedding",
                   "representation", "sequence", "verbalizer", "pointwise", "listwise")

__all__ = ["EvalConfig", "EvalRunner", "RunStopped"]


def _split_names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if str(v).strip()]


def default_scorers() -> list[str]:
    """Every default scorer that is registered (a plugin may take one away)."""
    valid = set(scorer_names())
    return [s for s in DEFAULT_SCORERS if s in valid]


class EvalConfig(BaseModel):
    """Everything that defines a run; written into ``results.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str = "ml-latest-small"
    data_dir: Path | None = None
    protocol: Literal["llmrank", "cold-start"] = "llmrank"
    users: int = Field(default=200, ge=1)
    seed: int = 0
    n_candidates: int = Field(default=20, ge=2)
    exclude_history: bool = False
    cold_share: float = Field(default=0.1, gt=0, lt=1, description="cold-start: share of items kept out of training")
    scorers: list[str] = Field(default_factory=lambda: default_scorers())
    bundle: Path | None = Field(default=None, description="evaluate this bundle instead of fitting one into OUT/bundle")
    fit_components: list[str] | None = Field(default=None, description="components the run's own fit trains (default: all)")
    fit_valid_users: int = Field(default=2000, ge=10)
    fit_component_config: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-component configs for the fit")
    out: Path = Path("eval/runs/latest")
    backend: str | None = None
    model: str | None = None
    threads: int | None = None
    max_history: int = Field(default=50, ge=1, description="history items per case (protocol: 50)")
    llm_history: int | None = Field(default=None, ge=0, description="LLM prompts: only the most recent N history items")
    calibrators: list[str] = Field(default_factory=lambda: list(CALIBRATOR_NAMES))
    calibration_protocol: Literal["llmrank", "likes", "both"] = "both"
    permutations: int = Field(default=1, ge=1, le=100, description="the LLM scorers' own permutation averaging")
    llm_users: int | None = Field(default=None, ge=1, description="LLM strategies: only the first N sampled users")
    listwise_users: int | None = Field(default=None, ge=1, description="listwise: only the first N sampled users")
    position_bias: bool = False
    position_users: int = Field(default=10, ge=1)
    position_points: int | None = Field(default=None, ge=2, description="sweep only N evenly spaced positions (None: all)")
    position_strategies: list[str] = Field(default_factory=lambda: list(POSITION_STRATEGIES))
    listwise_position_users: int | None = Field(default=None, ge=1)
    sweep_permutations: int = Field(default=3, ge=2, le=16, description="the 'with averaging' curve of the sweep")
    batch_size: int = Field(default=8, ge=1, description="LLM requests per scored (and cached) batch")
    stop_after: int | None = Field(default=None, ge=0, description="stop after N new LLM requests (testing resume)")
    progress: bool = True
    command: str | None = None

    @field_validator("scorers", "calibrators", "position_strategies", "fit_components", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> Any:
        return None if v is None else _split_names(v)

    @field_validator("scorers", mode="after")
    @classmethod
    def _default(cls, v: list[str]) -> list[str]:
        return v or default_scorers()

    def check_names(self) -> None:
        """Typed errors listing the valid names (before any data or model is loaded)."""
        if self.dataset not in dataset_names():
            raise UnknownNameError("dataset", self.dataset, dataset_names(), param="dataset")
        if not self.scorers:
            raise InvalidRequestError("no scorers given", param="scorers")
        valid = scorer_names()
        for name in self.scorers:
            if name not in valid:
                raise UnknownNameError("scorer", name, valid, param="scorers")
        for name in self.position_strategies:
            if name not in POSITION_STRATEGIES:
                raise UnknownNameError("position-bias strategy", name, POSITION_STRATEGIES, param="position_strategies")
        for name in self.calibrators:
            if name not in CALIBRATOR_NAMES:
                raise UnknownNameError("calibrator", name, CALIBRATOR_NAMES, param="calibrators")


class EvalRunner:
    """Runs one evaluation; ``backend`` (a Backend instance) and ``text_encoder`` are test seams."""

    def __init__(self, config: EvalConfig, *, backend: Any = None,
                 text_encoder: Callable[[list[str]], np.ndarray] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        config.check_names()
        self.config = config
        self.out = Path(config.out)
        self._backend = backend
        self._text_encoder = text_encoder
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.dataset: RecDataset | None = None
        self.splits: dict[str, UserSplit] = {}
        self.cold_items: frozenset[str] = frozenset()
        self.cases: dict[str, dict[str, list[EvalCase]]] = {}
        self.scored: dict[str, dict[str, dict[str, dict[str, tuple[ScoreResult, float]]]]] = {}
        self.fitted_calibrators: dict[str, Any] = {}
        self.users: list[str] = []
        self._rec: Any = None
        self._llm: LLMCaseScorer | None = None

    # ---- the bundle and the recommender ---------------------------------------------------
    def bundle_path(self) -> Path:
        if self.config.bundle is not None:
            return Path(self.config.bundle)
        cfg = self.config
        components = cfg.fit_components or available_components(list(dict.fromkeys([*DEFAULT_COMPONENTS, *cfg.scorers])))
        fit_cfg = FitConfig(dataset=cfg.dataset, data_dir=cfg.data_dir, components=components, seed=cfg.seed,
                            component_config=cfg.fit_component_config,
                            n_candidates=cfg.n_candidates, max_history=cfg.max_history,
                            valid_users=cfg.fit_valid_users, cold_items=sorted(self.cold_items), threads=cfg.threads,
                            progress=cfg.progress, command=cfg.command, **({"model": cfg.model} if cfg.model else {}))  # pyright: ignore[reportArgumentType]  (one optional str)
        path = self.out / "bundle"
        want = fit_cfg.model_dump(mode="json")
        want.pop("command")
        try:
            have = read_manifest(path).fit.get("config", {})
            have.pop("command", None)
            want.pop("cold_items")
            if have == want:
                self.log(f"eval: reusing the bundle fitted earlier in {path}")
                return path
        except BundleError:
            pass
        return fit_bundle(fit_cfg, path, backend=self._backend, text_encoder=self._text_encoder, log=self.log)

    @property
    def recommender(self) -> Any:
        if self._rec is None:
            cfg = self.config
            history = cfg.llm_history if cfg.llm_history is not None else cfg.max_history
            opts: dict[str, Any] = {"max_history": history, "permutations": cfg.permutations}
            if cfg.model:
                opts["model"] = cfg.model
            if cfg.threads:
                opts["threads"] = cfg.threads
            backend = self._backend if self._backend is not None else cfg.backend
            if backend is not None:
                opts["backend"] = backend
            self._rec = Recommender.load(self.bundle_path(), **opts)
            self._check_dataset(self._rec.bundle.manifest)
        return self._rec

    def _check_dataset(self, manifest: Any) -> None:
        if manifest.dataset.get("name") != self.dataset.name:  # type: ignore[union-attr]
            raise BundleError(f"the bundle was fitted on {manifest.dataset.get('name')!r}, not {self.dataset.name!r}",  # type: ignore[union-attr]
                              param="bundle")

    @property
    def llm(self) -> LLMCaseScorer:
        if self._llm is None:
            cfg = self.config
            self._llm = LLMCaseScorer(self.recommender, self.out, batch_size=cfg.batch_size, stop_after=cfg.stop_after,
                                      progress=cfg.progress, log=self.log)
        return self._llm

    # ---- cases ------------------------------------------------------------------------------
    def build_cases(self) -> None:
        cfg = self.config
        self.dataset = ds = load_dataset(cfg.dataset, cfg.data_dir)
        self.splits = leave_one_out(ds)
        common: dict[str, Any] = dict(n_users=cfg.users, seed=cfg.seed, history_len=cfg.max_history, splits=self.splits)
        if cfg.protocol == "cold-start":
            self.cold_items = cold_start_items(ds, share=cfg.cold_share, seed=cfg.seed)
            rank_sets = {s: cold_start_cases(ds, split=s, n_candidates=cfg.n_candidates, share=cfg.cold_share,
                                             **common) for s in ("valid", "test")}
        else:
            rank_sets = {s: llmrank_cases(ds, split=s, n_candidates=cfg.n_candidates,
                                          exclude_history=cfg.exclude_history, **common) for s in ("valid", "test")}
        self.cases["llmrank"] = rank_sets
        test_users = {c.user_id for c in rank_sets["test"]}
        self.users = [c.user_id for c in rank_sets["test"]]
        # validation and test cases of the same users, so calibrators fitted on one apply to the other
        rank_sets["valid"] = [c for c in rank_sets["valid"] if c.user_id in test_users]
        if cfg.calibration_protocol in ("likes", "both"):
            if not ds.has_ratings:
                self.log(f"note: {ds.name} has no ratings: the like/dislike calibration protocol is skipped")
            else:
                rated = [u for u in self.users
                         if all(self.splits[u].target(s).rating is not None for s in ("valid", "test"))]
                self.cases["likes"] = {
                    s: pointwise_cases(ds, split=s, users=rated, history_len=cfg.max_history, splits=self.splits)
                    for s in ("valid", "test")
                }

    def users_for(self, scorer: str) -> list[str]:
        n = None
        if scorer in LLM_NAMES:
            n = self.config.llm_users
            if scorer == "listwise" and self.config.listwise_users is not None:
                n = min(n or self.config.listwise_users, self.config.listwise_users)
        return self.users if n is None else self.users[:n]

    def scorers_for(self, set_name: str) -> list[str]:
        names = list(self.config.scorers)
        if set_name == "likes":  # one candidate: a distribution over the candidates is always 1
            names = [s for s in names if s not in ("verbalizer", "listwise")]
        return names

    # ---- scoring -------------------------------------------------------------------------------
    def score(self, name: str, cases: list[EvalCase], desc: str) -> list[tuple[ScoreResult, float]]:
        cls = scorer_class(name, param="scorers")
        if cls.needs_llm:
            return self.llm.score(name, cases, desc=desc)
        if not cls.needs_fit:  # random: seeded by the run, on the bundle's items
            scorer = cls(self.recommender.bundle.space, seed=self.config.seed)  # type: ignore[call-arg]
            t0 = time.perf_counter()
            results = scorer.score_many([c.request for c in cases])
            per = (time.perf_counter() - t0) / max(1, len(cases))
            return [(r, per) for r in results]
        return rank_cases(self.recommender, name, cases)

    def score_all(self) -> None:
        for set_name, by_split in self.cases.items():
            self.scored[set_name] = {}
            for name in self.scorers_for(set_name):
                if name not in self.recommender.strategy_names():
                    self.log(f"note: {name} was not fitted into the bundle: left out")
                    continue
                keep = set(self.users_for(name))
                self.scored[set_name][name] = {}
                for split, cases in by_split.items():
                    mine = [c for c in cases if c.user_id in keep]
                    got = self.score(name, mine, desc=f"{name} {set_name}/{split}")
                    self.scored[set_name][name][split] = {c.user_id: rg for c, rg in zip(mine, got)}

    def subset_ranking(self, users: list[str]) -> dict[str, Any]:
        keep = set(users)
        out = {}
        for name, scored in self.scored["llmrank"].items():
            cases = [c for c in self.cases["llmrank"]["test"] if c.user_id in keep and c.user_id in scored["test"]]
            if len(cases) == len(keep):
                out[name] = ranking_metrics(_rank(scored["test"][c.user_id][0], c) for c in cases)
        return out

    # ---- everything ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.build_cases()
        self.score_all()
        sets: dict[str, Any] = {}
        for set_name in self.scored:
            sets[set_name] = {"scorers": {
                name: evaluate_scorer(self, set_name, name) for name in self.scored[set_name]}}
        llm_subset = [s for s in cfg.scorers if s in LLM_NAMES and len(self.users_for(s)) < len(self.users)]
        for s in sorted({len(self.users_for(x)) for x in llm_subset}):
            sets["llmrank"].setdefault("subsets", {})[f"first {s} users"] = self.subset_ranking(self.users[:s])
        sweep = position_sweep(self) if cfg.position_bias else None
        self.save_models()
        rec = self.recommender
        manifest = rec.bundle.manifest
        record = {
            "command": cfg.command or " ".join(sys.argv),
            "dataset": cfg.dataset,
            "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
            "protocol": cfg.protocol,
            "seed": cfg.seed,
            "users": len(self.users),
            "model": rec.model_name,
            "backend": rec.backend_name,
            # strategies scored by another LLM than the pipeline's (a trained ranker names its own)
            "engines": {name: {"model": m, "backend": b} for name in cfg.scorers
                        for m, b in [rec.engine_of(name)] if (m, b) != (rec.model_name, rec.backend_name)},
            "bundle": str(rec.bundle.folder),
            "git_commit": git_commit(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "new_llm_requests": self._llm.new_requests if self._llm else 0,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        results = {
            "run": record,
            "config": json.loads(cfg.model_dump_json()),
            "expected_random": expected_random(cfg.n_candidates),
            "definitions": definitions(cfg.n_candidates),
            "sets": sets,
            "bundle": {
                "components": [c.model_dump(mode="json") for c in manifest.components],
                "fusion": manifest.fusion,
                "validation": manifest.validation,
                "fit_seconds": manifest.fit.get("wall_seconds"),
            },
            "position_bias": sweep,
        }
        (self.out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
        plots = write_plots(results, self.out)
        write_report(results, self.out, plots)
        results["plots"] = plots  # for the caller to name them; results.json is written above, without it
        return results

    def save_models(self) -> None:
        folder = self.out / "calibrators"
        folder.mkdir(parents=True, exist_ok=True)
        for key, model in self.fitted_calibrators.items():
            model.save(folder / (key.replace("/", "__") + ".json"))


def _rank(result: ScoreResult, case: EvalCase) -> int:
    return target_rank(result.scores, case.ground_truth_index, order=result.order)


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
