"""The batch job: read users, skip those already written, rank the rest in batches, write parts.

Two executors run the same :class:`RankWorker`: Ray Data (``map_batches`` over a fixed
pool of actors, each building its ``Recommender`` once) or a plain in-process loop.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import RecommenderError
from ..protocol import Item
from ..ray_cluster import ray_cluster
from ..recommender import Recommender
from .rows import error_dict, error_row, ok_row, to_request, user_key
from .store import Format, prepare_output, read_catalog, read_rows, write_part


class BatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Path
    output: Path = Field(description="folder of part files; a rerun skips the users already in it")
    output_format: Format = "jsonl"
    catalog: Path | None = Field(default=None, description="candidates for rows without their own (minus the history)")
    top_k: int = Field(default=10, ge=1, description="default for rows without top_k")
    reasons: bool = False
    strategy: str | None = None
    batch_size: int = Field(default=16, ge=1, description="users per rank_many call and per part file")
    limit: int | None = Field(default=None, ge=1, description="only the first N input rows")
    use_ray: bool = True
    address: str | None = Field(default=None, description="existing Ray cluster; default: a local Ray for the job")
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    progress: bool = True


@dataclass
class RecommenderSpec:
    """How each worker builds its Recommender: a bundle, Recommender keyword arguments, or a factory."""

    bundle: Path | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: Callable[[], Recommender] | None = None

    def build(self) -> Recommender:
        if self.factory is not None:
            return self.factory()
        if self.bundle is not None:
            # The options (--backend, --threads, --base-url ...) apply to a bundle too, as in `llm-rec serve`.
            return Recommender.load(self.bundle, **self.kwargs)  # type: ignore[attr-defined]
        return Recommender(**self.kwargs)


class BatchSummary(BaseModel):
    rows: int = Field(description="input rows considered (after --limit)")
    skipped: int = Field(description="already written by an earlier run")
    ranked: int
    errors: int
    seconds: float = Field(description="wall time of this run, start-up included")
    startup_seconds: float = Field(description="until the first batch was written (Ray start, model load)")
    users_per_s: float = Field(description="(ranked + errors) / seconds")
    executor: str


class RankWorker:
    """Ranks one batch of pending rows and writes it as one part; built once per actor."""

    def __init__(self, spec: RecommenderSpec, config: BatchConfig, catalog: list[Item] | None) -> None:
        self.recommender = spec.build()
        self.config = config
        self.catalog = catalog

    def __call__(self, batch: Any) -> dict[str, Any]:
        cfg = self.config
        if hasattr(batch, "to_pydict"):  # a pyarrow batch from Ray (numpy would turn all-null columns into NaN)
            batch = batch.to_pydict()
        out: list[dict[str, Any] | None] = []
        todo: list[tuple[int, Any]] = []
        for k, (index, uid, data, err) in enumerate(zip(batch["row"], batch["user_id"], batch["data"], batch["error"])):
            index, uid = int(index), (str(uid) if uid is not None else None)
            if err is not None:
                out.append({"user_id": uid, "row": index, "items": [], "fallback_used": False, "notes": [],
                            "error": json.loads(err)})
                continue
            try:
                todo.append((k, to_request(json.loads(data), top_k=cfg.top_k, reasons=cfg.reasons,
                                           strategy=cfg.strategy, catalog=self.catalog)))
                out.append(None)
            except RecommenderError as exc:
                out.append(error_row(uid, index, exc))
        for k, result in zip([k for k, _ in todo], self._rank([r for _, r in todo])):
            index, uid = int(batch["row"][k]), str(batch["user_id"][k])
            out[k] = ok_row(uid, index, result) if not isinstance(result, RecommenderError) else error_row(uid, index, result)
        rows = [r for r in out if r is not None]
        if rows:
            write_part(cfg.output, rows, cfg.output_format)
        return {"row": [r["row"] for r in rows], "ok": [r["error"] is None for r in rows]}

    def _rank(self, requests: list[Any]) -> list[Any]:
        if not requests:
            return []
        try:
            return self.recommender.rank_many(requests)
        except RecommenderError:
            pass  # find the request(s) that failed; the others still get their ranking
        results: list[Any] = []
        for req in requests:
            try:
                results.append(self.recommender.rank_request(req))
            except RecommenderError as exc:
                results.append(exc)
        return results


def _pending(cfg: BatchConfig, done: set[str]) -> tuple[int, list[dict[str, Any]]]:
    """(rows considered, rows not yet written), each row as plain columns Ray can carry."""
    seen: dict[str, int] = {}
    total, todo = 0, []
    for index, row in read_rows(cfg.input):
        if cfg.limit is not None and index >= cfg.limit:
            break
        total += 1
        if isinstance(row, RecommenderError):
            key, err = f"row:{index}", row
        else:
            key, err = user_key(row, index, seen)
        if key in done:
            continue
        uid = row.get("user_id") if isinstance(row, dict) else None
        todo.append({
            "row": index, "user_id": None if uid is None else str(uid),
            # JSON text, not nested columns: rows differ in shape and Arrow would need one schema for all
            "data": None if err else json.dumps(row, ensure_ascii=False),
            "error": json.dumps(error_dict(err)) if err else None,
        })
    return total, todo


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[dict[str, list[Any]]]:
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        yield {col: [r[col] for r in chunk] for col in ("row", "user_id", "data", "error")}


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.done = self.errors = 0
        self.start = time.perf_counter()
        self.first: float | None = None
        self._last = 0.0

    def update(self, oks: list[bool]) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.start
        self.done += len(oks)
        self.errors += sum(1 for ok in oks if not ok)
        if self.enabled and (now - self._last > 2 or self.done == self.total):
            self._last = now
            rate = self.done / (now - self.start)
            eta = (self.total - self.done) / rate if rate else float("inf")
            print(f"batch: {self.done}/{self.total} users ({self.errors} errors), {rate:.2f} users/s, "
                  f"eta {eta:.0f} s", file=sys.stderr, flush=True)


def run_batch(config: BatchConfig, spec: RecommenderSpec | None = None) -> BatchSummary:
    """Rank every user of ``config.input`` not yet in ``config.output``; see the module docs."""
    spec = spec or RecommenderSpec()
    start = time.perf_counter()
    catalog = read_catalog(config.catalog) if config.catalog else None
    done = prepare_output(config.output, config.output_format)
    total, todo = _pending(config, done)
    progress = _Progress(len(todo), config.progress)
    if todo:
        if config.use_ray:
            _run_ray(config, spec, catalog, todo, progress)
        else:
            worker = RankWorker(spec, config, catalog)
            for batch in _batches(todo, config.batch_size):
                progress.update(worker(batch)["ok"])
    seconds = time.perf_counter() - start
    return BatchSummary(rows=total, skipped=total - len(todo), ranked=progress.done - progress.errors,
                        errors=progress.errors, seconds=round(seconds, 3),
                        startup_seconds=round(progress.first or 0.0, 3),
                        users_per_s=round(progress.done / seconds, 3) if seconds else 0.0,
                        executor=f"ray x{config.num_workers}" if config.use_ray else "in-process")


def _run_ray(config: BatchConfig, spec: RecommenderSpec, catalog: list[Item] | None,
             todo: list[dict[str, Any]], progress: _Progress) -> None:
    with ray_cluster(config.address, who="batch", param="use_ray",
                     missing="Ray is not installed: pip install 'llm-recommender[batch]', or use --no-ray") as ray:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts users, not blocks
        # Without threads set, each worker's torch would use all cores and the workers would fight for them.
        if spec.factory is None and "threads" not in spec.kwargs:
            spec = RecommenderSpec(bundle=spec.bundle, kwargs={**spec.kwargs, "threads": max(1, int(config.cpus_per_worker))})
        ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // config.batch_size)))
        ranked = ds.map_batches(
            RankWorker,
            fn_constructor_kwargs={"spec": spec, "config": config, "catalog": catalog},
            batch_size=config.batch_size,
            batch_format="pyarrow",
            # One batch in flight per actor: batches take seconds, and Ray's default (4 queued per actor)
            # handed a small job's every batch to the first actor up while the second stood idle.
            compute=ray.data.ActorPoolStrategy(size=config.num_workers, max_tasks_in_flight_per_actor=1),
            num_cpus=config.cpus_per_worker,
            num_gpus=config.gpus_per_worker or None,
        )
        for batch in ranked.iter_batches(batch_size=None, batch_format="numpy"):
            progress.update([bool(ok) for ok in batch["ok"]])
