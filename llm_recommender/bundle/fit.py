"""``llm-rec fit``: train every component on the training split, fit the fusion on validation, write a bundle.

Steps (each logged with its wall time):

1. Load the dataset and its leave-one-out splits. Training data = every user's interactions
   before their *validation* target (neither the validation nor the test target of any
   user is ever seen by a component); ``cold_items`` are removed from training entirely.
2. Item vectors for the whole catalogue: the LLM's pooled hidden states (cached on disk by
   model + template + text) and MiniLM embeddings, as far as the components need them.
3. Fit each component; score the validation cases (the ground truth + ``n_candidates-1``
   sampled negatives, per user) with each.
4. Choose the fusion's components by cross-validated marginal gain, fit the fusion on all
   validation rows, and write the bundle atomically (see :mod:`.manifest`).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..backends import backend_class
from ..backends.configs import TransformersConfig
from ..data import load_dataset
from ..data.splits import cold_start_cases, leave_one_out, llmrank_cases
from ..data.words import parse_item_words
from ..errors import InvalidRequestError
from ..files import atomic_folder
from ..model_store import DEFAULT_MODEL
from ..prompts import PromptRenderer
from ..provenance import git_commit
from ..scorers import scorer_class, scorer_names
from ..scorers.baselines.embedding import DEFAULT_TEXT_ENCODER, text_vectors
from ..scorers.component import Component, RayTraining, TrainingData
from ..scorers.fused import (
    LLM_KIND,
    Fusion,
    cold_flags,
    history_terms_gain,
    ndcg10,
    reference_rows,
    request_shortness,
    score_with_reference,
    select_components,
)
from ..scorers.item_space import ItemSpace
from ..scorers.learned.encoder import ItemEncoder
from .bundle import REPRESENTATION_TEMPLATES, template_hashes
from .manifest import BundleManifest, ComponentRecord, write_manifest

DEFAULT_COMPONENTS = ("popularity", "cooccurrence", "itemknn", "als", "embedding", "representation", "sequence")


class FitConfig(BaseModel):
    """Everything that defines a fit; written into ``bundle.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str = "ml-latest-small"
    data_dir: Path | None = None
    model: str = DEFAULT_MODEL
    components: list[str] = Field(default_factory=lambda: list(DEFAULT_COMPONENTS))
    component_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    valid_users: int | None = Field(default=2000, ge=10, description="validation cases the fusion is fitted on (sampled)")
    n_candidates: int = Field(default=20, ge=2)
    max_history: int = Field(default=50, ge=1)
    min_gain: float = Field(default=0.002, description="validation NDCG@10 a component must add to stay in the fusion")
    l2: float = Field(default=1.0, gt=0)
    seed: int = 0
    cold_items: list[str] = Field(default_factory=list, description="items kept out of training (cold-start)")
    case_fusion: bool = Field(default=True, description="with cold_items: fit the fusion on cold validation cases too, "
                              "with a cold flag per candidate (a case-aware fusion); False: warm cases only, as before")
    threads: int | None = None
    progress: bool = True
    command: str | None = None
    item_words: str | None = Field(default=None, description="movie | product | book | item | 'noun/verb': what reasons "
                                   "call the items (default: what the dataset's loader records; generic: neutral)")
    ray_address: str | None = Field(default=None, description="None: one process; 'local': a local Ray cluster of "
                                    "ray_workers CPUs; else the address of a Ray cluster to join. On Ray: the LLM item "
                                    "vectors (Ray Data) and the sequence model (Ray Train; see docs/fit-on-ray.md)")
    ray_workers: int = Field(default=2, ge=1, description="Ray actors computing item vectors, each loading the LLM once; "
                             "Ray Train workers of the sequence model")
    ray_cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs per worker (its torch threads: at least 1)")
    ray_gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs per worker (0: CPU workers)")

    @field_validator("components", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v


def available_components(names: list[str]) -> list[str]:
    """``names`` less those that are not bundle components (fused, the LLM strategies)."""
    return [n for n in names if n in scorer_names() and issubclass(scorer_class(n), Component)]


def component_class(name: str) -> type[Component]:
    cls = scorer_class(name, param="components")
    if not issubclass(cls, Component):
        raise InvalidRequestError(f"{name!r} is not a fitted component; components: "
                                  f"{', '.join(available_components(scorer_names()))}", param="components")
    return cls


def _cold_validation(config: FitConfig, ds: Any, splits: Any, space: ItemSpace, data: TrainingData, n_valid: int,
                     log: Callable[[str], None]) -> tuple[list[int] | None, list[Any]]:
    """With cold items and ``case_fusion``: the catalogue rows no component trains on, and cold validation cases
    (each user's cold item before its test one, among cold candidates: :func:`cold_start_cases`)."""
    if not (config.cold_items and config.case_fusion) or len(config.cold_items) < config.n_candidates:
        return None, []
    trained = np.zeros(len(space), dtype=bool)
    for seq in data.sequences:
        trained[seq] = True
    cases = cold_start_cases(ds, split="valid", n_users=None, n_candidates=config.n_candidates, seed=config.seed,
                             history_len=config.max_history, splits=splits, cold=frozenset(config.cold_items))
    cases = cases[:n_valid]  # every eligible user (those with two cold items) up to the warm cases' number
    log(f"fit: case-aware fusion: {len(cases)} cold validation cases beside the warm ones, "
        f"{int((~trained).sum())} items never seen in training")
    return np.flatnonzero(~trained).tolist(), cases


def fit_bundle(
    config: FitConfig,
    out: str | Path,
    *,
    backend: Any = None,
    text_encoder: Callable[[list[str]], np.ndarray] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Fit and write a bundle to ``out``; ``backend`` / ``text_encoder`` are test seams (tiny models).

    With ``config.ray_address`` one cluster serves every step that runs on Ray (the item vectors, the training):
    started (or joined) here, before the first, and left after the last."""
    with _fit_cluster(config):
        return _fit_bundle(config, out, backend=backend, text_encoder=text_encoder, log=log)


def _fit_cluster(config: FitConfig) -> AbstractContextManager[Any]:
    """The Ray cluster of the whole fit when a step will run on it; nothing otherwise. The steps' own
    ``ray_cluster`` calls then join it instead of starting and stopping a local cluster each."""
    if config.ray_address is None:
        return nullcontext()
    try:
        needs_llm, on_ray = _ray_steps(config.components)
    except InvalidRequestError:
        return nullcontext()  # _fit_bundle raises it with the valid names
    if not needs_llm and not on_ray:
        return nullcontext()
    from ..ray_cluster import fit_ray_cluster  # Ray is optional (the [batch] extra)

    return fit_ray_cluster(config.ray_address, config.ray_workers, config.ray_cpus_per_worker)


def _on_local_cluster(config: FitConfig) -> str:
    """The Ray steps' log words for the cluster: "on a local cluster of N CPUs" when the fit starts one, none when
    it joins one."""
    if config.ray_address != "local":
        return ""
    from ..ray_cluster import local_cluster_cpus

    return f" on a local cluster of {local_cluster_cpus(config.ray_workers, config.ray_cpus_per_worker)} CPUs"


def _ray_steps(components: list[str]) -> tuple[bool, list[str]]:
    """The fit's steps that can run on Ray: whether any component reads LLM item vectors (Ray Data), and the
    components that train on Ray Train."""
    classes = {n: component_class(n) for n in components}
    return any("llm" in c.vectors for c in classes.values()), [n for n, c in classes.items() if c.trains_on_ray]


def _fit_bundle(config: FitConfig, out: str | Path, *, backend: Any, text_encoder: Any,
                log: Callable[[str], None] | None) -> Path:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    for name in config.components:
        component_class(name)  # typed error listing the valid names, before any work
    if not config.components:
        raise InvalidRequestError("no components given", param="components")
    if config.threads:
        import torch  # optional (the [torch] extra): only where threads are set

        torch.set_num_threads(config.threads)

    ds = load_dataset(config.dataset, config.data_dir)
    splits = leave_one_out(ds)
    space = ItemSpace([ds.item(i) for i in ds.item_ids])
    cold = set(config.cold_items)
    sequences = [
        np.array([space.index[x.item_id] for x in s.before("valid") if x.item_id not in cold], dtype=np.int64)
        for s in splits.values()
    ]
    data = TrainingData(space=space, sequences=[s for s in sequences if len(s)], seed=config.seed,
                        model=config.model)
    log(f"fit: {ds.name}: {len(space)} items, {len(data.sequences)} users, "
        f"{sum(len(s) for s in data.sequences)} training interactions"
        + (f", {len(cold)} cold items kept out" if cold else ""))

    words = parse_item_words(config.item_words) if config.item_words else ds.words
    manifest = BundleManifest(model=config.model, item_words=words.model_dump())
    vectors_t = time.perf_counter()
    vectors = {v for name in config.components for v in component_class(name).vectors}
    needs_llm, on_ray = _ray_steps(config.components)
    if config.ray_address is not None and on_ray:
        from ..scorers.learned._ray_training import require_ray_train  # torch: the component needs it anyway

        require_ray_train()  # before any step runs
    if config.ray_address is not None and not needs_llm and not on_ray:
        log(f"fit: no component needs LLM item vectors or trains on Ray Train ({', '.join(_ray_trained())}): "
            "fitting in this process")
    if needs_llm and config.ray_address is not None:
        if backend is not None:
            raise InvalidRequestError("a backend object cannot go to Ray workers: they load config.model; "
                                      "leave ray_address unset to fit with this backend", param="ray_address")
        space.vectors["llm"], encoder = _ray_llm_vectors(config, space, log)
    elif needs_llm:
        encoder = _llm_encoder(config, backend, space)
        space.vectors["llm"] = encoder.encode_items(space.items)
    if needs_llm:
        manifest.model_fingerprint = encoder.model_fingerprint()
        manifest.representation = {"layer": encoder.layer, "pooling": encoder.pooling, "dim": encoder.dim}
        manifest.templates = template_hashes(REPRESENTATION_TEMPLATES)
    if "minilm" in vectors:
        embed = text_vectors(text_encoder)
        space.vectors["minilm"] = embed(space.items)
        manifest.representation["text_encoder"] = DEFAULT_TEXT_ENCODER if text_encoder is None else "custom"
    if vectors:
        log(f"fit: item vectors for {len(space)} items in {time.perf_counter() - vectors_t:.1f} s "
            f"({', '.join(f'{k} {v.shape[1]}-d' for k, v in space.vectors.items())})")

    n_valid = min(config.valid_users or len(splits), len(splits))
    valid_cases = llmrank_cases(ds, split="valid", n_users=n_valid, n_candidates=config.n_candidates,
                                seed=config.seed, history_len=config.max_history, splits=splits)
    data.validation = valid_cases  # for early stopping only; never training examples
    # case-aware fusion: cold validation cases (targets and candidates kept out of training) beside the warm ones
    untrained, cold_cases = _cold_validation(config, ds, splits, space, data, n_valid, log)
    data.cold_validation = cold_cases
    requests = [c.request for c in valid_cases + cold_cases]
    labels = [np.asarray(c.labels, dtype=float) for c in valid_cases + cold_cases]
    gt = [c.ground_truth_index for c in valid_cases + cold_cases]
    flags = None if untrained is None else [cold_flags(untrained, space.rows(r.candidates)) for r in requests]
    n_warm = len(valid_cases)
    if config.ray_address is not None and on_ray:
        data.ray = RayTraining(address=config.ray_address, workers=config.ray_workers,
                               cpus_per_worker=config.ray_cpus_per_worker, gpus_per_worker=config.ray_gpus_per_worker)

    ref_rows = reference_rows(len(space), config.seed)
    reference = [space.items[r] for r in ref_rows]
    fitted: dict[str, Component] = {}
    results: dict[str, list[Any]] = {}
    records: dict[str, ComponentRecord] = {}
    for name in config.components:
        cls = component_class(name)
        t0 = time.perf_counter()
        if data.ray is not None and cls.trains_on_ray:
            log(f"fit: {name}: training on Ray Train, {config.ray_workers} workers{_on_local_cluster(config)}")
        comp = cls(space, config.component_config.get(name)).fit(data)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results[name] = score_with_reference(comp, requests, reference)
        score_s = (time.perf_counter() - t1) / max(1, len(requests))
        fitted[name] = comp
        alone = ndcg10(results[name][:n_warm], gt[:n_warm])
        validation = {"ndcg@10": round(alone, 4), "seconds_per_request": round(score_s, 5)}
        if cold_cases:
            validation["cold_ndcg@10"] = round(ndcg10(results[name][n_warm:], gt[n_warm:]), 4)
        records[name] = ComponentRecord(name=name, kind=cls.kind, config=comp.config.model_dump(mode="json"),
                                        fit_seconds=round(fit_s, 2), ray_train=comp.ray_train, validation=validation)
        log(f"fit: {name}: fitted in {fit_s:.1f} s, validation NDCG@10 alone {alone:.4f}"
            + (f" (cold cases {validation['cold_ndcg@10']:.4f})" if cold_cases else "")
            + f" ({score_s * 1e3:.1f} ms/request)")

    # a component that runs the LLM for every request must also beat the noise of a small validation set
    costly = [n for n in fitted if fitted[n].kind == LLM_KIND]
    groups = [c.user_id for c in valid_cases + cold_cases] if cold_cases else None
    sel = select_components(results, labels, list(fitted), min_gain=config.min_gain, l2=config.l2,
                            seed=config.seed, log=log, costly=costly, cold=flags, groups=groups)
    kept, cv = sel.kept, sel.cv
    for name, rec in records.items():
        gain, need = sel.gains.get(name, 0.0), sel.required(name, config.min_gain)
        rec.marginal_gain = round(gain, 4)
        rec.kept = name in kept
        if name in sel.errors:
            rec.validation["marginal_gain_standard_error"] = round(sel.errors[name], 4)
        if not rec.kept:
            noise = f"; an LLM component must also beat one standard error, {sel.errors[name]:.4f}" if name in costly else ""
            # gain: cross-validated NDCG@10 of the fusion with it minus without it
            rec.reason = f"with it the cross-validated NDCG@10 changes by {gain:+.4f}, below the {need:.4f} required{noise}"
    # history-length terms (a short history may want other weights than a long one): kept for their gain only
    short = request_shortness(requests)
    history = history_terms_gain(results, labels, kept, short, min_gain=config.min_gain, l2=config.l2,
                                 seed=config.seed, cold=flags, groups=groups)
    log(f"fusion: history-length terms {history.record()['reason']}")
    if history.kept:
        cv += history.gain
    short_kept = short if history.kept else None
    fusion = Fusion.fit(results, labels, kept, l2=config.l2, reference=ref_rows, cold=flags, untrained=untrained,
                        short=short_kept)
    fused = fusion.combine({c: results[c] for c in kept}, flags, short_kept)
    manifest.components = list(records.values())
    manifest.fusion = {"components": kept, "l2": config.l2, "coefficients": fusion.coefficients(),
                       "history_terms": history.record()}
    manifest.validation = {"users": len(valid_cases), "fused_ndcg@10_in_sample": round(ndcg10(fused[:n_warm], gt[:n_warm]), 4),
                           "fused_ndcg@10_cv": round(cv, 4)}
    if cold_cases:  # the CV figure above is over warm and cold cases together
        manifest.validation |= {"cold_users": len(cold_cases), "case_aware_fusion": True,
                                "fused_cold_ndcg@10_in_sample": round(ndcg10(fused[n_warm:], gt[n_warm:]), 4)}
    manifest.dataset = {"name": ds.name, "items": len(space), "users": len(splits), "fingerprint": _fingerprint(ds),
                        "cold_items": len(cold)}
    manifest.fit = {"command": config.command or " ".join(sys.argv), "config": config.model_dump(mode="json"),
                    "git_commit": git_commit(), "wall_seconds": round(time.perf_counter() - t_start, 1)}
    manifest.fit["config"].pop("cold_items", None)  # item ids only, but they can be long: count above
    out = Path(out)
    with atomic_folder(out) as tmp:
        space.save(tmp)
        for name, comp in fitted.items():
            comp.save(tmp / "components" / name)
        fusion.save(tmp)
        write_manifest(tmp, manifest)
    log(f"fit: wrote {out} ({_size_mb(out):.1f} MB) in {time.perf_counter() - t_start:.1f} s; fusion: "
        f"{', '.join(kept)}; validation NDCG@10 (cross-validated) {cv:.4f}")
    return out


def _llm_encoder(config: FitConfig, backend: Any, space: ItemSpace) -> Any:
    if backend is None:
        backend = backend_class("transformers")(TransformersConfig(model=config.model, threads=config.threads))
    if not backend.supports_hidden_states:
        raise InvalidRequestError(
            f"item representations need a backend with hidden states (transformers), not {backend.name!r}",
            param="backend")
    return ItemEncoder.from_backend(backend, PromptRenderer(backend), batch_size=32)


def _ray_llm_vectors(config: FitConfig, space: ItemSpace, log: Callable[[str], None]) -> tuple[np.ndarray, Any]:
    """The item-representation step on Ray Data (see :mod:`.fit_ray`), on the fit's cluster (:func:`_fit_cluster`)."""
    from ..ray_cluster import fit_ray_cluster  # Ray is optional (the [batch] extra)
    from .fit_ray import ray_item_vectors

    assert config.ray_address is not None
    with fit_ray_cluster(config.ray_address, config.ray_workers, config.ray_cpus_per_worker) as ray:
        log(f"fit: LLM item vectors on Ray Data, {config.ray_workers} workers{_on_local_cluster(config)}")
        vectors, encoder, remote = ray_item_vectors(
            ray, config.model, space.items, workers=config.ray_workers, cpus_per_worker=config.ray_cpus_per_worker,
            gpus_per_worker=config.ray_gpus_per_worker, log=log)
    log(f"fit: item vectors on Ray: {remote.computed} computed, {remote.resumed} from an interrupted run, "
        f"{len(space) - remote.computed - remote.resumed} from the representation cache")
    return vectors, encoder


def _ray_trained() -> list[str]:
    return [n for n in available_components(scorer_names()) if component_class(n).trains_on_ray]


def _fingerprint(ds: Any) -> str:
    h = hashlib.sha256()
    for col in ("user_id", "item_id", "timestamp"):
        h.update(repr(ds.column("interactions", col)[:: max(1, len(ds.interactions) // 5000)]).encode())
    h.update(str(len(ds.interactions)).encode())
    return h.hexdigest()[:16]


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
