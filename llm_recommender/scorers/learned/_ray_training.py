"""The sequence model's training loop on Ray Train: data-parallel (DDP) over ``workers`` Ray workers.

What runs where:

- The driver builds the model (same seeded initialisation as one process) and the training windows, and sends both,
  with the validation function, to the workers. It waits for the run, then takes the best epoch's weights from the
  last checkpoint. The model it returns is an ordinary :class:`SequenceModel`.
- Every worker runs the epochs. Epoch ``e`` orders the windows into batches with ``default_rng([seed, e])``, exactly
  as one process does, and worker ``r`` of ``W`` takes rows ``r, r+W, ...`` of each batch. So together the workers
  cover every batch of the epoch once, with the same number of optimizer steps as one process, and DDP averages
  their gradients (``batch_size`` stays the global batch). The loss is computed in a module's ``forward`` so that
  DDP syncs the gradients.
- Rank 0 scores validation after each epoch and broadcasts the score; every worker then keeps the same early-stopping
  state, so all stop together. Rank 0 reports a checkpoint each epoch (the others report metrics only).
- A worker that dies makes Ray Train restart the group (``FailureConfig(max_failures=2)``); the workers then resume
  from the last checkpoint (``ray.train.get_checkpoint()``). The run's folder is keyed by the data and settings, so a
  fit interrupted as a whole resumes there too when run again. It is removed once the model is back in the driver.

Not bitwise equal to one process: the torch RNG (dropout, ID dropout, negatives) is seeded per worker and epoch, and
each worker's rows give their own mean loss.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ...errors import InvalidRequestError, RecommenderError
from ..component import RayTraining
from ._training import (
    _loss,
    batches,
    identity,
    new_state,
    optimizer_step,
    record,
    sampling_log_q,
    set_lr,
    stopped,
    update_best,
    window_batch,
)

if TYPE_CHECKING:
    from .sequence_model import SequenceModel

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "sequence-checkpoint.pt"
MAX_FAILURES = 2  # worker-group restarts Ray Train allows before the fit fails


class LossNet(nn.Module):
    """The training loss as a module's ``forward``: what DDP wraps, so that backward syncs the gradients."""

    def __init__(self, net: Any, cfg: Any, log_q: torch.Tensor | None = None) -> None:  # net: a SequenceNet
        super().__init__()
        self.net, self.cfg, self.log_q = net, cfg, log_q

    def forward(self, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        vectors = self.net.item_vectors if self.cfg.use_text else None
        return _loss(self.net, self.cfg, inp, tgt, vectors, self.log_q)


def rank_rows(idx: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Worker ``rank``'s share of one batch: every ``world``-th row. A batch smaller than the group (the last one,
    at most) lends a row to each worker that has none, since every worker must take every step."""
    if len(idx) >= world:
        return idx[rank::world]
    return idx[[rank % len(idx)]]


def run_name(ident: dict[str, Any], settings: RayTraining) -> str:
    """The Ray Train run's name: the same data, settings and group size resume one another's run."""
    key = json.dumps({"identity": ident, "workers": settings.workers}, sort_keys=True, default=str)
    return "sequence-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _storage(settings: RayTraining) -> Path:
    if settings.storage is not None:
        return Path(settings.storage)
    from ...model_store import cache_dir

    return cache_dir() / "ray-train"


def require_ray_train() -> Any:
    """``ray.train``, or the typed error that says how to install it."""
    missing = "Ray Train is not installed: pip install 'llm-recommender[batch]', or leave out --ray-address"
    try:
        import ray.train
        import ray.train.torch  # noqa: F401
    except ModuleNotFoundError:
        raise InvalidRequestError(missing, param="ray_address") from None
    return ray.train


def train_on_ray(
    model: SequenceModel,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    valid_fn: Callable[[SequenceModel], float] | None,
    fingerprint: str,
    settings: RayTraining,
) -> dict[str, Any]:
    """Train ``model`` on Ray Train (see the module's doc); returns the training record, ``ray`` included."""
    from ...ray_cluster import fit_ray_cluster

    train = require_ray_train()
    from ray.train.torch import TorchTrainer

    ident = identity(model, fingerprint, valid_fn is not None)
    storage, name = _storage(settings), run_name(ident, settings)
    resources = {"CPU": settings.cpus_per_worker, **({"GPU": settings.gpus_per_worker} if settings.gpus_per_worker else {})}
    loop_config = {"model": model, "inputs": inputs, "targets": targets, "valid_fn": valid_fn, "identity": ident,
                   "threads": max(1, int(settings.cpus_per_worker)), "on_epoch": settings.on_epoch}
    t0 = time.perf_counter()
    with fit_ray_cluster(settings.address, settings.workers, settings.cpus_per_worker):
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config=loop_config,
            scaling_config=train.ScalingConfig(num_workers=settings.workers, use_gpu=settings.gpus_per_worker > 0,
                                               resources_per_worker=resources),
            run_config=train.RunConfig(storage_path=str(storage), name=name,
                                       failure_config=train.FailureConfig(max_failures=MAX_FAILURES),
                                       checkpoint_config=train.CheckpointConfig(num_to_keep=1)),
        )
        try:
            result = trainer.fit()
        except train.TrainingFailedError as exc:
            raise RecommenderError(
                f"the sequence model's training on Ray Train failed ({MAX_FAILURES} restarts allowed): {exc}. "
                f"Its checkpoints are in {storage / name}: run the same fit again to resume after the last one",
                param="ray_address") from exc
    seconds = time.perf_counter() - t0
    if result.checkpoint is None:  # pragma: no cover - every run reports one (see worker_loop)
        raise RecommenderError(f"the Ray Train run {storage / name} ended without a checkpoint", param="ray_address")
    with result.checkpoint.as_directory() as folder:
        blob = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    state = blob["state"]
    model.net.load_state_dict(state["best_state"] if state["best_state"] is not None else blob["net"])
    model.net.eval()
    out = record(state, len(inputs))
    out["ray"] = {"workers": settings.workers, "cpus_per_worker": settings.cpus_per_worker,
                  "gpus_per_worker": settings.gpus_per_worker, "epochs": state["epoch"], "steps": state["steps"],
                  "seconds": round(seconds, 1), "resumed_after_epochs": state["resumed"]}
    shutil.rmtree(storage / name, ignore_errors=True)  # done: a later fit of the same data starts afresh
    return out


def worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: resume from the last checkpoint if any, train its share of each epoch, report."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    model: SequenceModel = config["model"]
    cfg, net = model.config, model.net
    valid_fn, on_epoch = config["valid_fn"], config["on_epoch"]
    inputs, targets = config["inputs"], config["targets"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()

    state = {**new_state(), "steps": 0, "resumed": []}
    opt_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            blob = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        if blob["identity"] != config["identity"]:
            raise InvalidRequestError(f"the Ray Train checkpoint {checkpoint.path} is from another fit",
                                      param="ray_address")
        net.load_state_dict(blob["net"])
        opt_state, state = blob["opt"], blob["state"]
        state["resumed"].append(state["epoch"])
        log.info("sequence model on Ray Train: rank %d resumes after epoch %d", rank, state["epoch"])
    log_q = sampling_log_q(targets, net.item_vectors.shape[0]) if cfg.loss == "sampled_logq" else None
    loss_net = ray.train.torch.prepare_model(LossNet(net, cfg, log_q), parallel_strategy_kwargs=_ddp_kwargs())
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg.lr), weight_decay=cfg.weight_decay)  # resolved by fit
    if opt_state is not None:
        opt.load_state_dict(opt_state)

    with warnings.catch_warnings():  # read-only arrays from the object store, shared by the workers of a node:
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # never written to
        inp_all, tgt_all = torch.from_numpy(inputs), torch.from_numpy(targets)
    lengths = np.maximum((inputs > 0).sum(1), 1)
    has_valid = valid_fn is not None
    ran = 0
    while not stopped(cfg, state, has_valid):
        epoch, t0 = state["epoch"], time.perf_counter()
        torch.manual_seed(int(np.random.default_rng([cfg.seed, epoch, rank]).integers(2**62)))
        loss_net.train()
        total, steps = 0.0, 0
        epoch_batches = batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]), bucket=cfg.bucket)
        for k, idx in enumerate(epoch_batches):
            set_lr(opt, cfg, epoch, k, len(epoch_batches))
            inp, tgt = window_batch(inp_all, tgt_all, lengths, rank_rows(idx, rank, world), cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16 is True):
                loss = loss_net(inp.to(device), tgt.to(device))
            total, steps = total + optimizer_step(opt, net, loss, cfg.grad_clip), steps + 1
        sums = torch.tensor([total, steps, 0.0], dtype=torch.float64, device=device)
        if rank == 0 and has_valid:
            sums[2] = float(valid_fn(_cpu_model(model, device)))
        dist.all_reduce(sums[:2])  # the mean loss over the group
        dist.broadcast(sums, src=0)  # rank 0's validation score (and the sums) to every worker: one decision
        total, steps_all, score = sums.tolist()
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(steps_all, 1)}
        if has_valid:
            entry["valid"] = score
            update_best(state, score, epoch, lambda: _state_copy(net) if rank == 0 else None)
        state["seconds"] += time.perf_counter() - t0
        entry["seconds"] = round(state["seconds"], 3)
        state["history"].append(entry)
        state["epoch"], state["steps"] = epoch + 1, state["steps"] + steps
        ran += 1
        _report(rank, entry, state, config["identity"], net, opt)
        if on_epoch is not None:
            on_epoch(epoch + 1, rank)
    if ran == 0:  # restarted after the last epoch's report: report it again, so that the run ends on a checkpoint
        _report(rank, state["history"][-1] if state["history"] else {"epoch": state["epoch"]}, state,
                config["identity"], net, opt)


def _ddp_kwargs() -> dict[str, Any]:
    """item_vectors (the catalogue's text vectors) is a constant buffer: DDP need not sync it before every step."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}  # torch 2.13+ (broadcast_buffers is deprecated there)
    return {"broadcast_buffers": False}


def _cpu_model(model: SequenceModel, device: torch.device) -> SequenceModel:
    """The model validation scores: itself on the CPU, a CPU copy when the worker trains on a GPU."""
    if device.type == "cpu":
        return model
    import copy

    return type(model)(copy.deepcopy(model.net).cpu(), model.config, model.n_items)


def _state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _report(rank: int, entry: dict[str, Any], state: dict[str, Any], ident: dict[str, Any], net: nn.Module,
            opt: torch.optim.Optimizer) -> None:
    """Every worker reports the epoch's metrics; rank 0 adds the checkpoint (the state of all: DDP keeps them equal)."""
    import ray.train

    metrics = {k: v for k, v in entry.items() if isinstance(v, (int, float))}
    if rank != 0:
        ray.train.report(metrics)
        return
    blob = {"identity": ident, "state": state, "net": _state_copy(net), "opt": opt.state_dict()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / CHECKPOINT_FILE).write_bytes(buf.getvalue())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
