"""The evaluation runner behind ``llm-rec eval``: protocols -> scorers -> calibration -> metrics.

One run, for one dataset and seed:

1. **Cases.** The LLMRank candidate-ranking cases (:func:`llmrank_cases`) for the
   *validation* and the *test* target of the same sampled users. With
   ``calibration_protocol`` ``likes``/``both`` also the like/dislike cases
   (:func:`pointwise_cases`: the target alone, label = rating > 3) of those users.
2. **Scores.** Every scorer scores both splits. Baselines are fitted without leakage:
   popularity counts only interactions strictly before each target's time (order-only
   datasets: the split's training interactions), co-occurrence is fitted on the split's
   training interactions (:func:`training_interactions`). LLM outputs are cached per case
   in ``OUT/cache/<scorer>.jsonl`` (see :mod:`.cache`) as each batch finishes, so an
   interrupted run resumes and a rerun costs nothing. ``llm_users`` / ``listwise_users``
   restrict the (slow) LLM strategies to the first N sampled users; the report says so.
3. **Calibration.** Each calibrator (Platt, temperature, isotonic) is fitted on the
   scorer's *validation* outputs and labels only and applied to its test outputs. The
   **hybrid** is the feature model ``sigmoid(theta^T x + b)`` over the components'
   scalar scores (optionally embedding vectors), also fitted on validation only.
4. **Metrics.** NDCG/HR/MRR on the test cases (ties never favour the ground truth;
   listwise rankings are scored exactly as returned), AUC, log loss, Brier and ECE per
   candidate before and after each calibrator, listwise parse-failure shares, seconds
   per user, and optionally the position-bias sweep (the ground truth moved to every
   position) with and without permutation averaging.

ECE "on the LLMRank sets" is over (user, candidate) rows: label 1 for the ground truth,
0 for its ``n_candidates - 1`` negatives (19 at the default 20: base rate 5%). The like/dislike sets give the calibration of
P(like) for the target item itself. ``results.json`` states which one each figure uses.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..baselines import BASELINES, make_baseline
from ..calibration import FeatureLogisticCalibrator, FeatureSet, fit_calibrator, hybrid_features
from ..data import dataset_names, load_dataset
from ..data.base import RecDataset
from ..errors import InvalidRequestError, UnknownNameError
from ..protocol import RankRequest
from ..scorers import LLM_STRATEGIES
from ..scorers.base import ScoreResult
from ..scorers.verbalizer import permutation_orders
from .cache import ResultCache, case_key
from .metrics import ECE_BINS, expected_random, probability_metrics, ranking_metrics, reliability_bins, target_rank
from .protocols import (
    EvalCase,
    UserSplit,
    leave_one_out,
    llmrank_cases,
    pointwise_cases,
    position_variants,
    training_interactions,
)

BASELINE_NAMES = tuple(BASELINES)
LLM_NAMES = tuple(LLM_STRATEGIES)
HYBRID = "hybrid"
HYBRID_BASELINES = "hybrid-baselines"
SCORER_NAMES = (*BASELINE_NAMES, *LLM_NAMES, HYBRID)
CALIBRATOR_NAMES = ("platt", "temperature", "isotonic")
PROTOCOLS = ("llmrank",)
CALIBRATION_PROTOCOLS = ("llmrank", "likes", "both")
# Scorers whose probabilities are a distribution over the request's candidates: temperature
# scaling keeps them one (softmax mode), and they mean nothing for a single candidate.
DISTRIBUTION_SCORERS = ("verbalizer", "listwise", "popularity")
HYBRID_COMPONENTS = (
    "verbalizer", "pointwise", "listwise", "representation", "embedding", "popularity", "cooccurrence",
)
POSITION_STRATEGIES = ("verbalizer", "listwise")  # pointwise scores each candidate alone: no position
LISTWISE_FAILURE_KINDS = ("not_json", "schema", "unknown_id", "duplicate_id", "missing_id")


class RunStopped(Exception):
    """Raised when ``stop_after`` new LLM requests were scored (tests use it to simulate an interruption)."""


def _split_names(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if str(v).strip()]


class EvalConfig(BaseModel):
    """Everything that defines a run; written into ``results.json``."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "ml-latest-small"
    data_dir: Path | None = None
    protocol: Literal["llmrank"] = "llmrank"
    users: int = Field(200, ge=1)
    seed: int = 0
    n_candidates: int = Field(20, ge=2)
    exclude_history: bool = False
    scorers: list[str] = Field(default_factory=lambda: list(SCORER_NAMES))
    out: Path = Path("eval/runs/latest")
    backend: str | None = None
    model: str | None = None
    threads: int | None = None
    max_history: int = Field(50, ge=1, description="history items per case (protocol: 50)")
    llm_history: int | None = Field(None, ge=0, description="LLM prompts: only the most recent N history items")
    calibrators: list[str] = Field(default_factory=lambda: list(CALIBRATOR_NAMES))
    calibration_protocol: Literal["llmrank", "likes", "both"] = "both"
    permutations: int = Field(1, ge=1, le=16, description="orders averaged per LLM request in the main run")
    llm_users: int | None = Field(None, ge=1, description="LLM strategies: only the first N sampled users")
    listwise_users: int | None = Field(None, ge=1, description="listwise: only the first N sampled users")
    position_bias: bool = False
    position_users: int = Field(10, ge=1)
    position_points: int | None = Field(None, ge=2, description="sweep only N evenly spaced positions (None: all)")
    position_strategies: list[str] = Field(default_factory=lambda: list(POSITION_STRATEGIES))
    listwise_position_users: int | None = Field(None, ge=1)
    sweep_permutations: int = Field(3, ge=2, le=16, description="the 'with averaging' curve of the sweep")
    hybrid_vectors: Literal["product", "concat", "both"] | None = None
    hybrid_l2: float = Field(1.0, gt=0)
    batch_size: int = Field(8, ge=1, description="LLM requests per scored (and cached) batch")
    stop_after: int | None = Field(None, ge=0, description="stop after N new LLM requests (testing resume)")
    progress: bool = True
    command: str | None = None

    @field_validator("scorers", "calibrators", "position_strategies", mode="before")
    @classmethod
    def _lists(cls, v: Any) -> list[str]:
        return _split_names(v)

    def check_names(self) -> None:
        """Typed errors listing the valid names (before any data or model is loaded)."""
        if self.dataset not in dataset_names():
            raise UnknownNameError("dataset", self.dataset, dataset_names(), param="dataset")
        if not self.scorers:
            raise InvalidRequestError("no scorers given", param="scorers")
        for name in self.scorers:
            if name not in SCORER_NAMES:
                raise UnknownNameError("scorer", name, SCORER_NAMES, param="scorers")
        for name in self.position_strategies:
            if name not in POSITION_STRATEGIES:
                raise UnknownNameError("position-bias strategy", name, POSITION_STRATEGIES, param="position_strategies")
        for name in self.calibrators:
            if name not in CALIBRATOR_NAMES:
                raise UnknownNameError("calibrator", name, CALIBRATOR_NAMES, param="calibrators")


# ---- small helpers ----------------------------------------------------------------------


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        root = cwd or Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _flat(results: Sequence[ScoreResult], cases: Sequence[EvalCase]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.asarray(c.labels, dtype=float) for c in cases])
    probs = np.concatenate([np.clip(np.asarray(r.probabilities, dtype=float), 0.0, 1.0) for r in results])
    return labels, probs


def _rank(result: ScoreResult, case: EvalCase) -> int:
    return target_rank(result.scores, case.ground_truth_index, order=result.order)


def listwise_failure_shares(results: Sequence[ScoreResult]) -> dict[str, Any]:
    """Shares of listwise requests whose outputs failed, from ``details['attempts']``.

    Per request: ``failed_to_parse`` = some output was not JSON or broke the schema;
    ``unknown_id`` / ``duplicate_id`` / ``missing_id`` = some output had that problem;
    ``first_attempt_failed``; ``fallback`` = no valid ranking after the re-asks (the
    verbalizer scores were used). ``attempt_shares`` are the same kinds per generated output.
    """
    n = len(results)
    if n == 0:
        return {"requests": 0}
    per_request = {k: 0 for k in (*LISTWISE_FAILURE_KINDS, "failed_to_parse", "first_attempt_failed", "fallback")}
    kinds_per_attempt = {k: 0 for k in LISTWISE_FAILURE_KINDS}
    attempts_total = 0
    for r in results:
        attempts = r.details.get("attempts", [])
        attempts_total += len(attempts)
        kinds = {a.get("kind") for a in attempts if not a.get("ok")}
        for a in attempts:
            if not a.get("ok") and a.get("kind") in kinds_per_attempt:
                kinds_per_attempt[a["kind"]] += 1
        for k in LISTWISE_FAILURE_KINDS:
            per_request[k] += k in kinds
        per_request["failed_to_parse"] += bool(kinds & {"not_json", "schema"})
        per_request["first_attempt_failed"] += bool(attempts) and not attempts[0].get("ok")
        per_request["fallback"] += bool(r.details.get("fallback"))
    out: dict[str, Any] = {"requests": n, "attempts": attempts_total, "mean_attempts": attempts_total / n}
    out |= {k: v / n for k, v in per_request.items()}
    out["attempt_shares"] = {k: (v / attempts_total if attempts_total else 0.0) for k, v in kinds_per_attempt.items()}
    return out


def average_over_orders(parts: Sequence[tuple[list[int], ScoreResult]], n: int) -> ScoreResult:
    """Average scores and probabilities of one request shown in several candidate orders.

    ``parts[k] = (order, result)``: shown candidate ``j`` was original candidate ``order[j]``.
    """
    if len(parts) == 1 and parts[0][0] == list(range(n)):
        return parts[0][1]
    scores, probs = np.zeros(n), np.zeros(n)
    attempts: list[Any] = []
    fallback = False
    for order, res in parts:
        idx = np.asarray(order)
        scores[idx] += np.asarray(res.scores, dtype=float)
        probs[idx] += np.asarray(res.probabilities, dtype=float)
        attempts += res.details.get("attempts", [])
        fallback = fallback or bool(res.details.get("fallback"))
    k = len(parts)
    details: dict[str, Any] = {"permutations": k}
    if attempts:
        details |= {"attempts": attempts, "fallback": fallback}
    return ScoreResult(
        scores=scores / k,
        probabilities=probs / k,
        history_used=min(r.history_used for _, r in parts),
        fallbacks=[f for _, r in parts for f in r.fallbacks],
        notes=sorted({note for _, r in parts for note in r.notes}),
        details=details,
    )


# ---- the runner -------------------------------------------------------------------------


class EvalRunner:
    """Runs one evaluation; ``backend`` (a Backend instance) and ``embedding_encoder`` are test seams."""

    def __init__(
        self,
        config: EvalConfig,
        *,
        backend: Any = None,
        embedding_encoder: Callable[[list[str]], np.ndarray] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        config.check_names()
        self.config = config
        self.out = Path(config.out)
        self._backend = backend
        self._encoder = embedding_encoder
        self._recommender: Any = None
        self._caches: dict[str, ResultCache] = {}
        self._new_llm_requests = 0
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        # filled by run()
        self.dataset: RecDataset | None = None
        self.splits: dict[str, UserSplit] = {}
        self.cases: dict[str, dict[str, list[EvalCase]]] = {}
        self.scored: dict[str, dict[str, dict[str, dict[str, tuple[ScoreResult, float]]]]] = {}
        self.hybrid_models: dict[str, FeatureLogisticCalibrator] = {}
        self.hybrid_dropped: dict[str, list[str]] = {}
        self.fitted_calibrators: dict[str, Any] = {}

    # -- LLM plumbing ------------------------------------------------------------------
    @property
    def recommender(self) -> Any:
        if self._recommender is None:
            from ..recommender import Recommender

            history = self.config.llm_history if self.config.llm_history is not None else self.config.max_history
            opts: dict[str, Any] = {"max_history": history, "permutations": 1}
            if self.config.model:
                opts["model"] = self.config.model
            if self.config.threads:
                opts["threads"] = self.config.threads
            backend = self._backend if self._backend is not None else self.config.backend
            self._recommender = Recommender(backend=backend, **opts)
        return self._recommender

    def llm_signature(self, strategy: str) -> dict[str, Any]:
        """What a cached LLM output depends on besides the case."""
        rec = self.recommender
        s = rec.settings
        keep = [
            "max_history",
            "max_prompt_tokens",
            "output_reserve_tokens",
            "max_title_chars",
            "max_description_chars",
            "listwise_retries",
            "listwise_max_tokens",
            "pointwise_prefix_reuse",
            "template_dir",
            "dtype",
        ]
        sig = {
            "strategy": strategy,
            "model": rec.model_name,
            "backend": rec.backend.name,
            **{k: str(getattr(s, k)) for k in keep},
        }
        if strategy == "representation":  # a retrained head must not reuse cached scores
            from ..representation.head import head_fingerprint

            sig["representation_head"] = head_fingerprint(s.representation_head)
        return sig

    def _cache(self, strategy: str) -> ResultCache:
        if strategy not in self._caches:
            self._caches[strategy] = ResultCache(self.out / "cache" / f"{strategy}.jsonl")
        return self._caches[strategy]

    def score_llm(
        self, strategy: str, cases: Sequence[EvalCase], *, permutations: int = 1, desc: str = ""
    ) -> list[tuple[ScoreResult, float]]:
        """LLM results for ``cases`` (averaged over ``permutations`` orders), through the cache."""
        scorer = self.recommender.scorer(strategy)
        cache = self._cache(strategy)
        sig = self.llm_signature(strategy)
        seed = self.recommender.settings.permutation_seed
        plans = []
        for case in cases:
            orders = permutation_orders(case.request, permutations, seed) if permutations > 1 else [None]
            shown = [case if o is None else case.with_candidate_order(o) for o in orders]
            plans.append((case, orders, shown, [case_key(c, sig) for c in shown]))
        todo: dict[str, EvalCase] = {}
        for _, _, shown, keys in plans:
            for c, k in zip(shown, keys):
                if k not in cache and k not in todo:
                    todo[k] = c
        if todo:
            self._score_missing(scorer, cache, list(todo.items()), desc or strategy)
        out = []
        for case, orders, _shown, keys in plans:
            n = len(case.request.candidates)
            parts = [(o if o is not None else list(range(n)), cache.get(k)[0]) for o, k in zip(orders, keys)]
            out.append((average_over_orders(parts, n), sum(cache.get(k)[1] for k in keys)))
        return out

    def _score_missing(self, scorer: Any, cache: ResultCache, todo: list[tuple[str, EvalCase]], desc: str) -> None:
        bs = self.config.batch_size
        bar = None
        if self.config.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), desc=desc, unit="req", file=sys.stderr, dynamic_ncols=True)
        try:
            for start in range(0, len(todo), bs):
                batch = todo[start : start + bs]
                if self.config.stop_after is not None and self._new_llm_requests + len(batch) > self.config.stop_after:
                    batch = batch[: max(0, self.config.stop_after - self._new_llm_requests)]
                    if batch:
                        self._score_batch(scorer, cache, batch)
                    raise RunStopped(f"stopped after {self.config.stop_after} new LLM requests (rerun to resume)")
                self._score_batch(scorer, cache, batch)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()

    def _score_batch(self, scorer: Any, cache: ResultCache, batch: list[tuple[str, EvalCase]]) -> None:
        t0 = time.perf_counter()
        results = scorer.score_many([c.request for _, c in batch])
        per = (time.perf_counter() - t0) / len(batch)
        cache.put_many([(k, r, per) for (k, _), r in zip(batch, results)])
        self._new_llm_requests += len(batch)

    # -- baselines -----------------------------------------------------------------------
    def _baselines(self) -> dict[str, Any]:
        assert self.dataset is not None
        wanted = set(self.config.scorers) | (
            set(HYBRID_COMPONENTS) & set(self.config.scorers) if HYBRID in self.config.scorers else set()
        )
        made: dict[str, Any] = {}
        if "random" in wanted:
            made["random"] = make_baseline("random", seed=self.config.seed)
        if "embedding" in wanted:
            made["embedding"] = make_baseline(
                "embedding", return_vectors=self.config.hybrid_vectors is not None, encoder=self._encoder
            )
        return made

    def popularity_for(self, split: str) -> tuple[Any, bool]:
        """A popularity scorer for ``split`` and whether it takes per-case cutoffs."""
        ds = self.dataset
        assert ds is not None
        pop = make_baseline("popularity")
        if ds.time_kind == "unix":
            return pop.fit(ds.column("interactions", "item_id"), ds.column("interactions", "timestamp")), True
        train = training_interactions(self.splits, split)  # type: ignore[arg-type]
        return pop.fit([x.item_id for _, x in train]), False

    def cooccurrence_for(self, split: str) -> Any:
        train = training_interactions(self.splits, split)  # type: ignore[arg-type]
        return make_baseline("cooccurrence").fit([u for u, _ in train], [x.item_id for _, x in train])

    def score_baseline(
        self, name: str, cases: list[EvalCase], split: str, made: dict[str, Any]
    ) -> list[tuple[ScoreResult, float]]:
        if not cases:
            return []
        requests: list[RankRequest] = [c.request for c in cases]
        cutoffs = None
        if name == "popularity":
            scorer, timed = self.popularity_for(split)
            cutoffs = [c.target_timestamp for c in cases] if timed else None
        elif name == "cooccurrence":
            scorer = self.cooccurrence_for(split)
        else:
            scorer = made[name]
        t0 = time.perf_counter()
        results = scorer.score_many(requests, cutoffs=cutoffs)
        per = (time.perf_counter() - t0) / len(cases)
        return [(r, per) for r in results]

    # -- the run ---------------------------------------------------------------------------
    def build_cases(self) -> None:
        cfg = self.config
        self.dataset = ds = load_dataset(cfg.dataset, cfg.data_dir)
        self.splits = leave_one_out(ds)
        common = dict(n_users=cfg.users, seed=cfg.seed, history_len=cfg.max_history, splits=self.splits)
        rank_sets = {
            split: llmrank_cases(
                ds, split=split, n_candidates=cfg.n_candidates, exclude_history=cfg.exclude_history, **common
            )
            for split in ("valid", "test")
        }
        self.cases["llmrank"] = rank_sets
        self.users = [c.user_id for c in rank_sets["test"]]
        if cfg.calibration_protocol in ("likes", "both"):
            if not ds.has_ratings:
                self.log(f"note: {ds.name} has no ratings: the like/dislike calibration protocol is skipped")
            else:
                rated = [
                    u for u in self.users if all(self.splits[u].target(s).rating is not None for s in ("valid", "test"))
                ]
                self.cases["likes"] = {
                    split: pointwise_cases(
                        ds, split=split, users=rated, history_len=cfg.max_history, splits=self.splits
                    )
                    for split in ("valid", "test")
                }

    def users_for(self, scorer: str) -> list[str]:
        n = None
        if scorer in LLM_NAMES:
            n = self.config.llm_users
            if scorer == "listwise" and self.config.listwise_users is not None:
                n = min(n or self.config.listwise_users, self.config.listwise_users)
        return self.users if n is None else self.users[:n]

    def scorers_for(self, set_name: str) -> list[str]:
        names = [s for s in self.config.scorers if s != HYBRID]
        if HYBRID in self.config.scorers:
            names += [s for s in HYBRID_COMPONENTS if s in self.config.scorers and s not in names]
        if set_name == "likes":  # one candidate: a distribution over the candidates is always 1
            names = [s for s in names if s not in ("verbalizer", "listwise")]
        return names

    def score_all(self) -> None:
        made = self._baselines()
        for set_name, by_split in self.cases.items():
            self.scored[set_name] = {}
            for name in self.scorers_for(set_name):
                keep = set(self.users_for(name))
                self.scored[set_name][name] = {}
                for split, cases in by_split.items():
                    mine = [c for c in cases if c.user_id in keep]
                    if name in LLM_NAMES:
                        got = self.score_llm(
                            name, mine, permutations=self.config.permutations, desc=f"{name} {set_name}/{split}"
                        )
                    else:
                        got = self.score_baseline(name, mine, split, made)
                    self.scored[set_name][name][split] = {c.user_id: rg for c, rg in zip(mine, got)}
            if HYBRID in self.config.scorers:
                self.fit_hybrids(set_name)

    # -- hybrid ---------------------------------------------------------------------------
    def fit_hybrids(self, set_name: str) -> None:
        comps = [s for s in HYBRID_COMPONENTS if s in self.scored[set_name]]
        if not comps:
            raise InvalidRequestError("the hybrid needs at least one component scorer", param="scorers")
        # A component scored on fewer users than the other LLM strategies (e.g. a reduced
        # listwise run) would shrink the hybrid's users: it is left out (results say so).
        cover = {c: len(self.scored[set_name][c]["test"]) for c in comps}
        llm_cover = [cover[c] for c in comps if c in LLM_NAMES]
        need = max(llm_cover) if llm_cover else 0
        self.hybrid_dropped[set_name] = [c for c in comps if cover[c] < need]
        comps = [c for c in comps if cover[c] >= need]
        variants = {HYBRID: comps}
        base_comps = [c for c in comps if c not in LLM_NAMES]
        covered_all = all(cover[c] == len(self.cases[set_name]["test"]) for c in comps)
        if not covered_all and base_comps and len(base_comps) < len(comps):
            variants[HYBRID_BASELINES] = base_comps
        for hname, hcomps in variants.items():
            self.scored[set_name][hname] = self._fit_hybrid(set_name, hname, hcomps)

    def _features(self, set_name: str, comps: list[str], split: str, user: str) -> FeatureSet:
        parts = {c: self.scored[set_name][c][split][user][0] for c in comps}
        return hybrid_features(parts, vectors=self.config.hybrid_vectors if "embedding" in comps else None)

    def _fit_hybrid(
        self, set_name: str, hname: str, comps: list[str]
    ) -> dict[str, dict[str, tuple[ScoreResult, float]]]:
        out: dict[str, dict[str, tuple[ScoreResult, float]]] = {}
        users = {
            split: [
                c.user_id
                for c in self.cases[set_name][split]
                if all(c.user_id in self.scored[set_name][k][split] for k in comps)
            ]
            for split in ("valid", "test")
        }
        val_cases = {c.user_id: c for c in self.cases[set_name]["valid"]}
        feats = [self._features(set_name, comps, "valid", u) for u in users["valid"]]
        y = np.concatenate([np.asarray(val_cases[u].labels, dtype=float) for u in users["valid"]])
        model = self.fit_feature_model(FeatureSet.concat(feats), y, [val_cases[u] for u in users["valid"]])
        self.hybrid_models[f"{set_name}/{hname}"] = model
        for split in ("valid", "test"):
            out[split] = {}
            for u in users[split]:
                fs = self._features(set_name, comps, split, u)
                logit = model.decision_function(fs)
                secs = sum(self.scored[set_name][c][split][u][1] for c in comps)
                res = ScoreResult(
                    scores=logit,
                    probabilities=1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))),
                    history_used=max(self.scored[set_name][c][split][u][0].history_used for c in comps),
                    details={"components": comps},
                )
                out[split][u] = (res, secs)
        return out

    def fit_feature_model(
        self, features: FeatureSet, labels: np.ndarray, cases: Sequence[EvalCase]
    ) -> FeatureLogisticCalibrator:
        """The hybrid's feature model; ``cases`` (validation only) are checked, never read for labels twice."""
        _assert_validation(cases)
        return FeatureLogisticCalibrator.fit(features, labels, l2=self.config.hybrid_l2)

    def fit_calibrator(
        self, name: str, results: Sequence[ScoreResult], cases: Sequence[EvalCase], **options: Any
    ) -> Any:
        """Every calibrator is fitted here, on validation cases only."""
        _assert_validation(cases)
        return fit_calibrator(name, list(results), [list(c.labels) for c in cases], **options)

    # -- metrics ----------------------------------------------------------------------------
    def evaluate_scorer(self, set_name: str, name: str) -> dict[str, Any]:
        scored = self.scored[set_name][name]
        test_cases = [c for c in self.cases[set_name]["test"] if c.user_id in scored["test"]]
        val_cases = [c for c in self.cases[set_name]["valid"] if c.user_id in scored["valid"]]
        test_res = [scored["test"][c.user_id][0] for c in test_cases]
        val_res = [scored["valid"][c.user_id][0] for c in val_cases]
        secs = [s for split in ("valid", "test") for _, s in scored[split].values()]
        entry: dict[str, Any] = {
            "users": len(test_cases),
            "seconds_per_user": float(np.mean(secs)) if secs else None,
        }
        if set_name == "llmrank":
            entry["ranking"] = ranking_metrics(_rank(r, c) for r, c in zip(test_res, test_cases))
        labels, probs = _flat(test_res, test_cases)
        if name in DISTRIBUTION_SCORERS and set_name == "likes":
            entry["note"] = "probability is a distribution over the candidates: constant for one candidate"
        cal: dict[str, Any] = {
            "uncalibrated": {
                **probability_metrics(labels, probs),
                "reliability": [b.to_dict() for b in reliability_bins(labels, probs)],
            }
        }
        for cname in self.config.calibrators:
            opts: dict[str, Any] = {}
            if cname == "temperature":
                opts["mode"] = "softmax" if (set_name == "llmrank" and name in DISTRIBUTION_SCORERS) else "sigmoid"
            try:
                cal_model = self.fit_calibrator(cname, val_res, val_cases, **opts)
            except Exception as exc:  # e.g. one class only in a tiny validation set
                cal[cname] = {"error": str(exc)}
                continue
            if name in LLM_STRATEGIES:  # recorded in the saved file: Recommender refuses it for anything else
                cal_model.fitted_for = self.recommender.calibration_key(name)
            self.fitted_calibrators[f"{set_name}/{name}/{cname}"] = cal_model
            p = np.concatenate([np.clip(cal_model.transform(r.scores, r.probabilities), 0, 1) for r in test_res])
            cal[cname] = {
                **probability_metrics(labels, p),
                "reliability": [b.to_dict() for b in reliability_bins(labels, p)],
            }
        entry["calibration"] = cal
        if name == "listwise":
            entry["listwise_failures"] = listwise_failure_shares(val_res + test_res)
        return entry

    def subset_ranking(self, users: list[str]) -> dict[str, Any]:
        keep = set(users)
        out = {}
        for name, scored in self.scored["llmrank"].items():
            cases = [c for c in self.cases["llmrank"]["test"] if c.user_id in keep and c.user_id in scored["test"]]
            if len(cases) == len(keep):
                out[name] = ranking_metrics(_rank(scored["test"][c.user_id][0], c) for c in cases)
        return out

    # -- position bias ------------------------------------------------------------------------
    def position_sweep(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        for strategy in cfg.position_strategies:
            if strategy not in cfg.scorers:
                continue
            n = cfg.position_users
            if strategy == "listwise" and cfg.listwise_position_users is not None:
                n = cfg.listwise_position_users
            users = set(self.users_for(strategy)[:n])
            cases = [c for c in self.cases["llmrank"]["test"] if c.user_id in users]
            positions = position_grid(cfg.n_candidates, cfg.position_points)
            variants = [v for c in cases for v in (position_variants(c)[p] for p in positions)]
            n_pos = len(positions)
            out[strategy] = {"users": len(cases), "positions": [p + 1 for p in positions]}
            for k in (1, cfg.sweep_permutations):
                got = self.score_llm(strategy, variants, permutations=k, desc=f"{strategy} position sweep K={k}")
                ranks = np.array([_rank(r, v) for (r, _), v in zip(got, variants)]).reshape(len(cases), n_pos)
                gt_prob = np.array([float(r.probabilities[v.ground_truth_index]) for (r, _), v in zip(got, variants)])
                gt_prob = gt_prob.reshape(len(cases), n_pos)
                out[strategy][f"K={k}"] = {
                    "permutations": k,
                    "ndcg@10": [ranking_metrics(ranks[:, p])["ndcg@10"] for p in range(n_pos)],
                    "hr@1": [ranking_metrics(ranks[:, p])["hr@1"] for p in range(n_pos)],
                    "mean_rank": ranks.mean(axis=0).tolist(),
                    "gt_probability": gt_prob.mean(axis=0).tolist(),
                    "spread_ndcg@10": float(np.ptp([ranking_metrics(ranks[:, p])["ndcg@10"] for p in range(n_pos)])),
                }
        return out

    # -- everything --------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.build_cases()
        self.score_all()
        sets: dict[str, Any] = {}
        for set_name in self.scored:
            sets[set_name] = {"scorers": {name: self.evaluate_scorer(set_name, name) for name in self.scored[set_name]}}
        llm_subset = [s for s in cfg.scorers if s in LLM_NAMES and len(self.users_for(s)) < len(self.users)]
        if llm_subset:
            for s in sorted({len(self.users_for(x)) for x in llm_subset}):
                sets["llmrank"].setdefault("subsets", {})[f"first {s} users"] = self.subset_ranking(self.users[:s])
        sweep = self.position_sweep() if cfg.position_bias else None
        self.save_models()
        llm_used = any(s in LLM_NAMES for s in cfg.scorers)
        record = {
            "command": cfg.command or " ".join(sys.argv),
            "dataset": cfg.dataset,
            "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
            "protocol": cfg.protocol,
            "seed": cfg.seed,
            "users": len(self.users),
            "model": self.recommender.model_name if llm_used else None,
            "backend": self.recommender.backend.name if llm_used else None,
            "git_commit": git_commit(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "new_llm_requests": self._new_llm_requests,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        results = {
            "run": record,
            "config": json.loads(cfg.model_dump_json()),
            "expected_random": expected_random(cfg.n_candidates),
            "definitions": definitions(cfg.n_candidates),
            "sets": sets,
            "hybrid": {k: m.coefficients() for k, m in self.hybrid_models.items()},
            "hybrid_left_out": self.hybrid_dropped,
            "position_bias": sweep,
        }
        (self.out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
        from .plots import write_plots
        from .report import write_report

        plots = write_plots(results, self.out)
        write_report(results, self.out, plots)
        return results

    def save_models(self) -> None:
        folder = self.out / "calibrators"
        folder.mkdir(parents=True, exist_ok=True)
        for key, model in {
            **self.fitted_calibrators,
            **{f"{k}/feature-model": m for k, m in self.hybrid_models.items()},
        }.items():
            model.save(folder / (key.replace("/", "__") + ".json"))


def position_grid(n_candidates: int, points: int | None) -> list[int]:
    """``points`` evenly spaced 0-based positions, first and last included (all when None)."""
    if points is None or points >= n_candidates:
        return list(range(n_candidates))
    return sorted({int(round(x)) for x in np.linspace(0, n_candidates - 1, max(points, 2))})


def _assert_validation(cases: Sequence[EvalCase]) -> None:
    bad = [c for c in cases if c.split != "valid"]
    if bad:
        raise AssertionError(f"calibration must see validation targets only; got a {bad[0].split!r} case")


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def definitions(n_candidates: int) -> dict[str, str]:
    """What each figure of results.json means, for a run with ``n_candidates`` per request."""
    return {
        "ranking": f"test targets of the LLMRank protocol (ground truth + {n_candidates - 1} random negatives); ties never "
        "favour the ground truth; listwise rankings are scored as returned",
        "seconds_per_user": f"mean wall seconds to score one user's request ({n_candidates} candidates), over validation and "
        "test requests; LLM figures are the first (uncached) run's, recorded in the cache",
        "calibration.llmrank": "per (user, candidate) row of the LLMRank test sets: label 1 for the ground truth, "
        "0 for the negatives; calibrators fitted on the validation sets of the same users only",
        "calibration.likes": "like/dislike protocol: the test target alone, label = rating > 3; calibrators fitted on "
        "the validation targets only",
        "ece": f"{ECE_BINS} equal-width bins of P(label = 1)",
        "hybrid": "logistic feature model sigmoid(theta^T x + b) over the components' scalar scores (standardised), "
        "fitted on validation only; its own probabilities are the 'uncalibrated' column",
    }
