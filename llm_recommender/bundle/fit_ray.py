"""The fit's item-representation step on Ray Data: ``llm-rec fit --ray-address``.

The catalogue's rendered item texts go through ``map_batches`` over a fixed pool of actors; each actor loads the
LLM once and returns the pooled hidden states of its batches, which the driver puts back in catalogue order. The
vectors are the ones the single-process fit computes (same backend, same batches of :data:`BATCH_SIZE`), so the
bundle is the same.

Failures: an actor whose process dies is restarted and its batch retried (Ray Data's own actor-pool policy, which
retries without bound; the test kills one). The driver
writes every batch it receives to ``<representation cache>/ray-parts/`` as it arrives, so a fit that was
interrupted (a killed driver, a lost cluster) computes only the batches it lacks when rerun; once the vectors are
in the representation cache the parts are removed.

All disk writes happen in the driver: workers on other machines need no shared storage.
"""

from __future__ import annotations

import hashlib
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.configs import TransformersConfig
from ..errors import CapabilityError
from ..files import atomic_write
from ..prompts import PromptRenderer
from ..protocol import Item
from ..scorers.learned.encoder import ItemEncoder

BATCH_SIZE = 32  # items per forward pass: the single-process fit's (see fit._llm_encoder)
RETRIES = 3  # retries of the task that reads the model's identity on a worker
PARTS = "ray-parts"
# The representation cache is written once, at the end: one chunk covers any catalogue (parts carry the resume).
_ONE_CHUNK = 1 << 40


class _EncodeActor:
    """One per Ray worker: loads the model once, then pools the hidden states of each batch of item texts."""

    def __init__(self, backend_config: dict[str, Any], layers: list[int], pooling: str, identity: dict[str, Any],
                 on_batch: Callable[[list[str]], None] | None = None) -> None:
        from ..backends.transformers_backend import TransformersBackend

        self.backend = TransformersBackend(TransformersConfig(**backend_config))
        here = self.backend.hidden_state_identity()
        if here != identity:  # e.g. a GPU worker in bf16 where the first worker ran fp32: vectors would differ
            raise RuntimeError(f"this Ray worker loads {backend_config['model']!r} as {here['dtype']} with weights "
                               f"{here['weights']}, the first worker as {identity['dtype']} with {identity['weights']}; "
                               "item vectors must come from one model: give all workers the same hardware")
        self.layers, self.pooling, self.on_batch = layers, pooling, on_batch

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One row in (a forward batch: its catalogue indices and texts), one row per item out."""
        texts = [str(t) for t in batch["text"][0]]
        if self.on_batch is not None:
            self.on_batch(texts)  # a test seam: a worker killed mid-batch, an interrupted fit
        vecs = self.backend.hidden_states(texts, layers=self.layers, pooling=self.pooling)[0]
        return {"index": np.asarray(batch["index"][0], dtype=np.int64), "vector": np.asarray(vecs, dtype=np.float32)}


def _identity(backend_config: dict[str, Any]) -> dict[str, Any]:
    from ..backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(TransformersConfig(**backend_config))
    return backend.hidden_state_identity()


class RayHiddenStates:
    """Stands in for the backend in the driver's :class:`ItemEncoder`: ``hidden_states`` runs on Ray actors.

    The encoder keeps doing what it does in one process (render the texts, look them up in the representation
    cache, write the cache); only the forward passes of the texts it lacks move to the cluster."""

    name = "transformers"
    supports_hidden_states = True

    def __init__(self, ray: Any, config: TransformersConfig, *, workers: int, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, batch_size: int = BATCH_SIZE,
                 on_batch: Callable[[list[str]], None] | None = None,
                 log: Callable[[str], None] = lambda msg: None) -> None:
        self.ray, self.config = ray, config
        self.workers, self.cpus, self.gpus = workers, cpus_per_worker, gpus_per_worker
        self.batch_size, self.on_batch, self.log = batch_size, on_batch, log
        self.parts_dir: Path | None = None  # set once the encoder knows its cache key
        self.computed = 0  # texts run through the actors (not found in the cache or the parts)
        self.resumed = 0  # texts found in the parts of an interrupted run
        self._identity: dict[str, Any] | None = None

    @property
    def model_name(self) -> str:
        return self.config.model

    def require(self, capability: str) -> None:
        if capability != "hidden_states":
            raise CapabilityError(f"the Ray workers provide hidden states only, not {capability}", param="backend")

    def _remote(self) -> dict[str, Any]:
        return {"num_cpus": self.cpus, **({"num_gpus": self.gpus} if self.gpus else {})}

    def hidden_state_identity(self) -> dict[str, Any]:
        """The model as a worker loads it (dtype included: a GPU worker's may differ from the driver's)."""
        identity = self._identity
        if identity is None:
            task = self.ray.remote(max_retries=RETRIES, **self._remote())(_identity)
            identity = self._identity = self.ray.get(task.remote(self.config.model_dump()))
        return identity

    def hidden_states(self, texts: Sequence[str], *, layers: Sequence[int], pooling: str = "mean") -> list[np.ndarray]:
        texts = list(texts)
        known = self._read_parts()
        todo = [(i, t) for i, t in enumerate(texts) if t not in known]
        self.resumed += len(texts) - len(todo)
        if self.resumed:
            self.log(f"fit: {self.resumed} item vectors kept from an interrupted run ({self.parts_dir})")
        if todo:
            self._run(todo, list(layers), pooling, known)
        return [np.stack([known[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)]

    def _run(self, todo: list[tuple[int, str]], layers: list[int], pooling: str, known: dict[str, np.ndarray]) -> None:
        ray = self.ray
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts items
        # One row per forward batch (its indices and texts): the batches are the single-process fit's whatever blocks
        # Ray Data forms (it splits rows evenly over blocks and bundles blocks, and padding makes a batch's
        # composition a numeric difference). from_items builds the blocks in the driver: no tasks before the actors.
        n = self.batch_size
        rows = [{"index": [i for i, _ in todo[k:k + n]], "text": [t for _, t in todo[k:k + n]]}
                for k in range(0, len(todo), n)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        vectors = ds.map_batches(
            _EncodeActor,
            fn_constructor_kwargs={"backend_config": self.config.model_dump(), "layers": layers, "pooling": pooling,
                                   "identity": self.hidden_state_identity(), "on_batch": self.on_batch},
            batch_size=1,  # one forward batch
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.workers, max_tasks_in_flight_per_actor=1),
            num_cpus=self.cpus,
            num_gpus=self.gpus or None,
            # No max_restarts / max_task_retries here: Ray Data's actor pools already restart a dead actor and
            # retry its batch (both -1, unbounded, in Ray 2.60), and passing them is deprecated (gone in Ray 2.64).
        )
        texts = dict(todo)
        start, done, last = time.perf_counter(), 0, 0.0
        for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
            got = [texts[int(i)] for i in batch["index"]]
            vecs = np.asarray(batch["vector"], dtype=np.float32)
            self._write_part(got, vecs)
            known.update(zip(got, vecs))
            done += len(got)
            now = time.perf_counter()
            if now - last > 5 or done == len(todo):
                last = now
                self.log(f"fit: item vectors on Ray: {done}/{len(todo)} ({done / (now - start):.1f} items/s "
                         f"since the {self.workers} workers were requested, their start-up included)")
        self.computed += done

    # ---- the parts: what an interrupted run already received ------------------------------------------------
    def _read_parts(self) -> dict[str, np.ndarray]:
        known: dict[str, np.ndarray] = {}
        if self.parts_dir is None or not self.parts_dir.is_dir():
            return known
        for path in sorted(self.parts_dir.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    known.update(zip((str(k) for k in z["keys"]), z["vectors"]))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                path.unlink(missing_ok=True)  # a part cut short: its batch is computed again
        return known

    def _write_part(self, texts: list[str], vecs: np.ndarray) -> None:
        if self.parts_dir is None:
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:20]
        with atomic_write(self.parts_dir / f"{name}.npz") as tmp:
            np.savez(tmp, keys=np.array(texts, dtype=str), vectors=vecs)

    def drop_parts(self) -> None:
        if self.parts_dir is not None:
            shutil.rmtree(self.parts_dir, ignore_errors=True)


def ray_item_vectors(ray: Any, model: str, items: Sequence[Item], *, workers: int, cpus_per_worker: float = 1.0,
                     gpus_per_worker: float = 0.0, batch_size: int = BATCH_SIZE,
                     on_batch: Callable[[list[str]], None] | None = None, cache: bool | Path = True,
                     log: Callable[[str], None] = lambda msg: None) -> tuple[np.ndarray, ItemEncoder, RayHiddenStates]:
    """The LLM item vectors of ``items`` (in their order) computed on the Ray cluster ``ray`` is connected to.

    Returns the vectors, the driver's encoder (its fingerprint, layer, pooling and dim go into the bundle) and the
    stand-in backend (how many texts it computed or resumed). Workers run torch on ``max(1, int(cpus_per_worker))``
    threads. ``cache``: the representation cache's root folder (True: the default one; False: none, and no parts)."""
    config = TransformersConfig(model=model, threads=max(1, int(cpus_per_worker)))
    remote = RayHiddenStates(ray, config, workers=workers, cpus_per_worker=cpus_per_worker,
                             gpus_per_worker=gpus_per_worker, batch_size=batch_size, on_batch=on_batch, log=log)
    encoder = ItemEncoder.from_backend(remote, PromptRenderer(remote), batch_size=_ONE_CHUNK, cache=cache)  # pyright: ignore[reportArgumentType]  (a stand-in: the encoder needs hidden states only)
    if encoder.cache_path is not None:
        remote.parts_dir = encoder.cache_path.parent / PARTS
    vectors = encoder.encode_items(items)
    remote.drop_parts()  # the representation cache holds them now
    return vectors, encoder, remote
