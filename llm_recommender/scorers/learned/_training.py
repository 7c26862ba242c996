"""The training loop of :class:`~llm_recommender.scorers.learned.sequence_model.SequenceModel`: seeded, resumable.

Determinism: the batch order of epoch ``e`` comes from ``default_rng([seed, e])`` and the
torch RNG (dropout, ID dropout, negatives) is saved in every checkpoint, so an interrupted
and resumed fit ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm  # installed with transformers and datasets

from ...errors import InvalidRequestError
from ...files import atomic_write

if TYPE_CHECKING:
    from .sequence_model import SequenceModel

log = logging.getLogger(__name__)


def sampling_log_q(targets: np.ndarray | torch.Tensor, n_rows: int) -> torch.Tensor:
    """log Q(j) of the ``sampled_logq`` loss: the negatives' distribution is the training targets' frequency (plus
    one, so every item can be drawn), row 0 (padding) never. Popular items, the hard negatives, are drawn often, and
    the loss subtracts log Q from each logit so that the sampled softmax estimates the full one (Bengio & Senecal;
    Yi et al. 2019, "sampling-bias-corrected" retrieval)."""
    t = torch.as_tensor(np.asarray(targets)).flatten()
    counts = torch.bincount(t[t > 0], minlength=n_rows).double() + 1.0
    counts[0] = 0.0
    return (counts / counts.sum()).log().float()


def _loss(net: Any, cfg: Any, inp: torch.Tensor, tgt: torch.Tensor, vectors: torch.Tensor | None,
          log_q: torch.Tensor | None = None) -> torch.Tensor:
    n_rows = net.item_vectors.shape[0]  # n_items + 1
    dev = inp.device  # the CPU in one process; a Ray Train worker's GPU draws the same kinds of numbers there
    keep = None
    if cfg.use_id_embedding and cfg.id_dropout > 0:
        keep = (torch.rand(n_rows, device=dev) >= cfg.id_dropout).float()
    pos = tgt > 0
    if cfg.loss == "full_softmax":
        # Every catalogue item's h_i once per step: inputs and outputs share it (as in SASRec).
        table, bias = net.items(torch.arange(n_rows, device=dev), vectors, keep)
        states = net.encoder(table[inp], inp > 0)
        s, t = states[pos], tgt[pos]  # the softmax below sees real target positions only, never padding
        logits = s @ table[1:].T
        if net.items.bias is not None or not cfg.trim:  # without item bias, bias is zeros: skip a pass over logits
            logits = logits + bias[1:]
        return F.cross_entropy(logits.float(), t - 1)
    # Sampled: n_negatives rows shared by the batch, and h_i of only the rows this step touches.
    lq = None if log_q is None else log_q.to(dev)
    if cfg.loss == "sampled_logq":
        assert lq is not None, "sampled_logq needs sampling_log_q(targets)"
        neg = torch.multinomial(lq.exp(), cfg.n_negatives, replacement=True)
    else:  # uniform: log Q is one constant, which a softmax ignores
        neg = torch.randint(1, n_rows, (cfg.n_negatives,), device=dev)
    rows, local = torch.unique(torch.cat([inp.flatten(), tgt[pos], neg]), return_inverse=True)
    table, bias = net.items(rows, vectors[rows] if vectors is not None else None, keep)
    n_inp, n_tgt = inp.numel(), int(pos.sum())
    states = net.encoder(table[local[:n_inp].view_as(inp)], inp > 0)
    s, t = states[pos], tgt[pos]
    t_loc, n_loc = local[n_inp : n_inp + n_tgt], local[n_inp + n_tgt :]
    pos_logit = (s * table[t_loc]).sum(-1, keepdim=True) + bias[t_loc].unsqueeze(-1)
    neg_logit = s @ table[n_loc].T + bias[n_loc]
    if lq is not None:
        pos_logit, neg_logit = pos_logit - lq[t].unsqueeze(-1), neg_logit - lq[neg]
    neg_logit = neg_logit.masked_fill(neg.unsqueeze(0) == t.unsqueeze(1), float("-inf"))  # accidental hits
    logits = torch.cat([pos_logit, neg_logit], 1).float()
    return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long, device=dev))


def optimizer_step(opt: Any, net: Any, loss: torch.Tensor, grad_clip: float | None) -> float:
    """One optimiser step on ``loss``, the gradients of ``net`` clipped to ``grad_clip`` when set; the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()
    return loss.item()


def set_lr(opt: Any, cfg: Any, epoch: int, step: int, n_steps: int) -> None:
    """Set the learning rate of step ``step`` (of ``n_steps``) in epoch ``epoch``: a pure function of the position,
    so a resumed fit follows the same schedule. ``constant`` leaves ``cfg.lr`` alone."""
    if cfg.lr_schedule == "constant":
        return
    total = max(cfg.epochs * n_steps, 1)
    t = min(epoch * n_steps + step, total)
    warm = max(int(cfg.warmup * total), 1)
    factor = min(1.0, (t + 1) / warm) * 0.5 * (1.0 + math.cos(math.pi * t / total))
    for group in opt.param_groups:
        group["lr"] = cfg.lr * factor


def window_batch(inp_all: torch.Tensor, tgt_all: torch.Tensor, lengths: np.ndarray, idx: np.ndarray,
                 cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The (input, target) rows ``idx``; with ``trim`` only as wide as their longest window."""
    b = torch.from_numpy(idx)
    inp, tgt = inp_all[b], tgt_all[b]
    if cfg.trim:  # windows are left-padded and right-aligned: drop the all-padding columns on the left
        width = int(lengths[idx].max())
        inp, tgt = inp[:, -width:], tgt[:, -width:]
    return inp, tgt


def identity(model: SequenceModel, fingerprint: str, has_valid_fn: bool) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings (less patience, and less epochs unless a schedule
    depends on them) and the data."""
    exclude = {"epochs", "patience"} if model.config.lr_schedule == "constant" else {"patience"}
    return {
        "config": model.config.model_dump(exclude=exclude),
        "n_items": model.n_items,
        "data": fingerprint,
        "valid_fn": has_valid_fn,
    }


def stopped(cfg: Any, state: dict[str, Any], has_valid_fn: bool) -> bool:
    return state["epoch"] >= cfg.epochs or bool(cfg.patience and has_valid_fn and state["bad"] >= cfg.patience)


def new_state() -> dict[str, Any]:
    return {"epoch": 0, "best": None, "best_state": None, "bad": 0, "history": [], "seconds": 0.0}


def update_best(state: dict[str, Any], score: float, epoch: int, best_state: Callable[[], Any]) -> None:
    """After epoch ``epoch`` (0-based) scored ``score`` on validation: keep the best weights, count bad epochs."""
    if state["best"] is None or score > state["best"]:
        state.update(best=score, best_state=best_state(), bad=0, best_epoch=epoch + 1)
    else:
        state["bad"] += 1


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, bucket: bool) -> list[np.ndarray]:
    """One epoch's batches of window indices, in a seeded random order.

    With ``bucket``, the shuffled windows are cut into pools of 32 batches, each pool is
    sorted by window length and cut into batches, and the batch order is shuffled again:
    batches hold windows of similar length (narrow after trimming) and stay random.
    """
    order = rng.permutation(len(lengths))
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    pool = 32 * batch_size
    out = []
    for p in range(0, len(order), pool):
        chunk = order[p : p + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[k] for k in rng.permutation(len(out))]


def train(
    model: SequenceModel,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    valid_fn: Callable[[SequenceModel], float] | None,
    progress: bool | str,
    checkpoint: Path | None,
    fingerprint: str,
    pause: Callable[[int, int], bool] | None = None,
) -> dict[str, Any]:
    """Train until the planned epochs or early stopping. ``pause(epochs_done, planned)``, asked after each epoch, may
    end this call sooner; the checkpoint then holds that epoch's state, and a later call with the same settings goes
    on from it as if never paused."""
    cfg, net = model.config, model.net
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg.lr), weight_decay=cfg.weight_decay)  # resolved by fit
    state = new_state()
    ident = identity(model, fingerprint, valid_fn is not None)
    if checkpoint is not None and checkpoint.is_file():
        state = _resume(checkpoint, ident, net, opt)
    vectors = net.item_vectors if cfg.use_text else None
    inp_all, tgt_all = torch.from_numpy(inputs), torch.from_numpy(targets)
    log_q = sampling_log_q(targets, net.item_vectors.shape[0]) if cfg.loss == "sampled_logq" else None
    lengths = np.maximum((inputs > 0).sum(1), 1)
    bar = _bar(progress, cfg.epochs, state["epoch"])
    while not stopped(cfg, state, valid_fn is not None):
        epoch, t0 = state["epoch"], time.perf_counter()
        net.train()
        total, steps = 0.0, 0
        epoch_batches = batches(lengths, cfg.batch_size, np.random.default_rng([cfg.seed, epoch]), bucket=cfg.bucket)
        for k, idx in enumerate(epoch_batches):
            set_lr(opt, cfg, epoch, k, len(epoch_batches))
            inp, tgt = window_batch(inp_all, tgt_all, lengths, idx, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 is True):
                loss = _loss(net, cfg, inp, tgt, vectors, log_q)
            total, steps = total + optimizer_step(opt, net, loss, cfg.grad_clip), steps + 1
        entry: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(steps, 1)}
        if valid_fn is not None:
            score = float(valid_fn(model))
            entry["valid"] = score
            update_best(state, score, epoch, model.state_copy)
        state["seconds"] += time.perf_counter() - t0
        entry["seconds"] = round(state["seconds"], 3)
        state["history"].append(entry)
        state["epoch"] = epoch + 1
        log.info("sequence model epoch %s", entry)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: round(v, 4) for k, v in entry.items() if k in ("loss", "valid")})
        if checkpoint is not None:
            _save_checkpoint(checkpoint, ident, state, net, opt)
        if pause is not None and pause(state["epoch"], cfg.epochs):
            break
    if bar is not None:
        bar.close()
    if state["best_state"] is not None:
        net.load_state_dict(state["best_state"])
    net.eval()
    return record(state, len(inputs))


def record(state: dict[str, Any], n_windows: int) -> dict[str, Any]:
    return {
        "epochs_run": state["epoch"],
        "best_epoch": state.get("best_epoch"),
        "best_valid": state["best"],
        "fit_seconds": round(state["seconds"], 3),
        "n_windows": n_windows,
        "history": state["history"],
    }


def _bar(progress: bool | str, total: int, initial: int) -> Any:
    if not progress:
        return None
    return tqdm(total=total, initial=initial, desc=progress if isinstance(progress, str) else "sequence model",
                unit="epoch")


def _save_checkpoint(path: Path, identity: dict, state: dict, net: Any, opt: Any) -> None:

    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "identity": identity,
        "state": state,
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _resume(path: Path, identity: dict, net: Any, opt: Any) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a checkpoint we cannot read must not be silently replaced
        raise InvalidRequestError(f"unreadable checkpoint {path}: {exc}", param="checkpoint_dir") from exc
    if blob.get("identity") != identity:
        raise InvalidRequestError(
            f"checkpoint {path} is from another fit (other data, n_items or settings); remove it to start over",
            param="checkpoint_dir",
        )
    net.load_state_dict(blob["net"])
    opt.load_state_dict(blob["opt"])
    torch.set_rng_state(blob["torch_rng"])
    log.info("resuming the sequence model from %s after epoch %d", path, blob["state"]["epoch"])
    return blob["state"]
