"""A SASRec-style sequence model over item IDs and the LLM's item representations.

The seed's P(u,i) = sigmoid(theta^T [h_u; h_i]) taken seriously:

- h_i = an item-ID embedding (training items only) + LayerNorm(Linear(standardized text
  vector)). An item the model has never seen (index ``-1``) still has h_i from its vector.
  ID dropout during training (``id_dropout``) zeroes random items' ID part so the text
  path learns to stand alone, which is what cold items get.
- h_u = a causal self-attention encoder over the history's h_i, read at the newest
  position. There are no user embeddings: h_u comes from the request's history alone, so
  a saved model holds no per-user data.
- score(u, i) = <h_u, h_i> + an optional bias of known items; trained by next-item
  prediction at every position with full-softmax (or sampled-softmax) cross-entropy.

>>> model = SequenceModel.fit(sequences, n_items, item_vectors, SequenceModelConfig(epochs=30), valid_fn=fn)
>>> model.score([np.array([3, 7, 1])], [np.array([5, 9, -1])], candidate_vectors=[vecs])
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...backends.kit import cpu_supports_bf16_fast
from ...errors import InvalidRequestError, ModelLoadError
from ...files import atomic_write
from ..component import RayTraining
from ..item_space import LARGE_CATALOGUE_ITEMS
from ._net import SequenceNet
from ._training import train

log = logging.getLogger(__name__)

FORMAT = "llm-recommender.sequence-model/1"
WEIGHTS_FILE, CONFIG_FILE, CHECKPOINT_FILE = "sequence.safetensors", "sequence.json", "sequence-checkpoint.pt"
# lr auto: the peak rate of a model on item IDs alone, and of one that reads text vectors. Measured on validation
# NDCG@10 (docs/fit-at-scale.md): IDs alone, synthetic 1M 0.8301 at 6e-3 against 0.8224 at 3e-3, ML-100K 0.7358
# against 0.7318; with the LLM's vectors (the default fit), synthetic 1M 0.7904 against 0.8002 and ML-100K 0.7174
# against 0.7194: the text path wants the lower rate.
LR_IDS_ONLY, LR_WITH_TEXT = 6e-3, 3e-3
# Settings that may change between an interrupted fit and its resumption.
RESUMABLE_CHANGES = {"epochs", "patience"}


class SequenceModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    max_len: int = Field(default=50, ge=2)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    use_id_embedding: bool = True
    use_text: bool = True
    text_dim: int = Field(default=0, ge=0, description="set by fit from the item vectors")
    item_bias: bool = False
    id_dropout: float = Field(default=0.0, ge=0.0, le=1.0, description="share of items whose ID part is zeroed per step")
    all_windows: bool = Field(default=True, description="train on every max_len window of a long sequence, not only the last")
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float | Literal["auto"] = Field(
        default="auto", description=f"peak learning rate; auto: {LR_IDS_ONLY:g} on item IDs alone (`use_text` off), "
        f"{LR_WITH_TEXT:g} with text vectors (measured: docs/fit-at-scale.md)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="cosine: a linear warm-up over `warmup` of the steps, then cosine decay to 0 "
        "at the end of `epochs` (so `epochs` is the planned length; early stopping can still end it sooner)")
    warmup: float = Field(default=0.05, ge=0.0, lt=1.0, description="cosine: share of the steps spent warming up")
    steps: int | None = Field(default=1000, ge=1, description="planned optimiser steps: the fit trains min(epochs, "
                              "max(2, ceil(steps / batches per epoch))) epochs, so a large dataset takes few passes "
                              "and a small one up to `epochs`; None: `epochs` (measured: docs/fit-at-scale.md)")
    weight_decay: float = Field(default=0.0, ge=0.0)
    grad_clip: float | None = Field(default=1.0, gt=0.0)
    loss: Literal["auto", "full_softmax", "sampled_logq", "sampled"] = Field(
        default="auto", description="full_softmax: every catalogue item in every step's softmax; sampled_logq: "
        "`n_negatives` items drawn by training frequency, shared by the batch, with the log-Q correction; sampled: "
        "uniform negatives (measured far worse); auto: full_softmax up to "
        f"{LARGE_CATALOGUE_ITEMS:,} items, sampled_logq above (measured: docs/fit-at-scale.md)")
    n_negatives: int = Field(default=2048, ge=1, description="negatives per step of the sampled losses")
    seed: int = 0
    bf16: bool | Literal["auto"] = Field(default="auto", description="bf16 autocast in training; auto: where the "
                                         "CPU has bf16 units (AVX512-BF16 or AMX), measured 1.7x per step on "
                                         "AVX512-BF16 (docs/fit-at-scale.md)")
    trim: bool = Field(default=True, description="run each batch only as wide as its longest window (same result, "
                       "less padding); False is the reference path")
    bucket: bool = Field(default=False, description="group windows of similar length into batches (seeded), so "
                         "trimmed batches are narrow; changes which windows share a batch (off: it cost ML-100K "
                         "validation NDCG@10, see docs/fit-at-scale.md)")
    patience: int | None = Field(default=5, ge=1, description="epochs without a better valid_fn before stopping")

    @model_validator(mode="after")
    def _check(self) -> SequenceModelConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not (self.use_id_embedding or self.use_text):
            raise ValueError("use_id_embedding and use_text cannot both be off")
        return self


def resolve_bf16(value: bool | str) -> bool:
    """A config's ``bf16`` as the fit uses it: ``auto`` is whether this CPU has bf16 units (AVX512-BF16 or AMX-BF16,
    where bf16 autocast trains faster; the same test as the backends' ``dtype: auto``)."""
    return cpu_supports_bf16_fast() if value == "auto" else bool(value)


def resolve_loss(config: SequenceModelConfig, n_items: int) -> str:
    """A config's ``loss`` as the fit uses it: ``auto`` is the full softmax on catalogues of up to
    :data:`~llm_recommender.scorers.item_space.LARGE_CATALOGUE_ITEMS` items and the log-Q-corrected sampled softmax on larger ones."""
    if config.loss != "auto":
        return config.loss
    return "full_softmax" if n_items <= LARGE_CATALOGUE_ITEMS else "sampled_logq"


def planned_epochs(config: SequenceModelConfig, n_windows: int) -> int:
    """The epochs a fit trains: ``epochs``, or with ``steps`` fewer when an epoch has many batches (at least 2)."""
    if config.steps is None:
        return config.epochs
    per_epoch = max(1, math.ceil(n_windows / config.batch_size))
    return min(config.epochs, max(2, math.ceil(config.steps / per_epoch)))


def resolve_lr(config: SequenceModelConfig) -> float:
    """A config's ``lr`` as the fit uses it: ``auto`` is :data:`LR_IDS_ONLY` without text vectors, else :data:`LR_WITH_TEXT`."""
    if config.lr != "auto":
        return float(config.lr)
    return LR_WITH_TEXT if config.use_text else LR_IDS_ONLY


def _shift(idx: np.ndarray) -> np.ndarray:
    """Catalogue index -> network row (k -> k + 1; unseen -1 -> 0)."""
    return np.where(idx >= 0, idx + 1, 0)


class SequenceModel:
    """A fitted sequence model; build it with :meth:`fit` or :meth:`load`."""

    def __init__(self, net: SequenceNet, config: SequenceModelConfig, n_items: int, record: dict | None = None):
        self.net = net
        self.config = config
        self.n_items = n_items
        self.record = record or {}
        self._vectors_np = net.item_vectors.numpy()

    # ---- fitting ----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        sequences: list[list[int]],
        n_items: int,
        item_vectors: np.ndarray | None,
        config: SequenceModelConfig | None = None,
        *,
        valid_fn: Callable[[SequenceModel], float] | None = None,
        progress: bool | str = True,  # a str: the progress bar's label
        checkpoint_dir: str | Path | None = None,
        ray: RayTraining | None = None,
        pause: Callable[[int, int], bool] | None = None,
    ) -> SequenceModel:
        """Train on ``sequences`` (per user, item indices ``0..n_items-1``, oldest first).

        ``valid_fn(model) -> float`` (higher is better) runs after every epoch; the best
        epoch's weights are kept and training stops after ``patience`` epochs without a gain.
        With ``checkpoint_dir`` the state is saved after every epoch and a later call with
        the same data and settings resumes from it (``patience`` may differ, and ``epochs`` too with a
        constant learning rate; a cosine schedule's length is part of the settings).
        With ``ray`` it trains data-parallel on Ray Train instead (see :mod:`._ray_training`; its checkpoints live
        in Ray Train's storage, so ``checkpoint_dir`` must be None) and ``record["ray"]`` says how.
        ``pause(epochs_done, planned_epochs)``, asked after each epoch (not on Ray), may end the call early; with
        ``checkpoint_dir`` a later call goes on from there on the same schedule.
        """
        config = config or SequenceModelConfig()
        if ray is not None and checkpoint_dir is not None:
            raise InvalidRequestError("on Ray Train the checkpoints are Ray Train's: leave checkpoint_dir unset",
                                      param="checkpoint_dir")
        if ray is not None and pause is not None:
            raise InvalidRequestError("a fit on Ray Train runs to its end: leave pause unset", param="pause")
        if n_items < 1:
            raise InvalidRequestError("n_items must be at least 1", param="n_items")
        vectors = _check_item_vectors(item_vectors, n_items, config.use_text)
        config = config.model_copy(update={"text_dim": vectors.shape[1] if config.use_text else 0,
                                           "bf16": resolve_bf16(config.bf16),
                                           "loss": resolve_loss(config, n_items), "lr": resolve_lr(config)})
        inputs, targets = _training_windows(sequences, n_items, config)
        config = config.model_copy(update={"epochs": planned_epochs(config, len(inputs))})
        torch.manual_seed(config.seed)
        net = SequenceNet(n_items, config.text_dim, config)
        if config.use_text:
            with torch.no_grad():
                t = torch.from_numpy(vectors)
                net.item_vectors[1:] = t
                net.items.text_mean.copy_(t.mean(0))
                net.items.text_std.copy_(t.std(0).clamp_min(1e-6))
        model = cls(net, config, n_items)
        fingerprint = hashlib.sha256(inputs.tobytes() + targets.tobytes() + vectors.tobytes()).hexdigest()[:16]
        if ray is not None:
            from ._ray_training import train_on_ray  # Ray is optional (the [batch] extra)

            model.record = train_on_ray(model, inputs, targets, valid_fn=valid_fn, fingerprint=fingerprint, settings=ray)
            return model
        model.record = train(
            model,
            inputs,
            targets,
            valid_fn=valid_fn,
            progress=progress,
            checkpoint=Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None,
            fingerprint=fingerprint,
            pause=pause,
        )
        return model

    # ---- scoring ----------------------------------------------------------------------
    def score(
        self,
        histories: Sequence[np.ndarray],
        candidates: Sequence[np.ndarray],
        candidate_vectors: Sequence[np.ndarray | None] | None = None,
        history_vectors: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """Logits <h_u, h_i> (+ bias) for each request's candidates, all requests in one padded pass.

        Index ``-1`` marks an item the model has not seen; its row of ``candidate_vectors[r]``
        / ``history_vectors[r]`` (one row per position, other rows ignored) is then its text vector.
        """
        if len(histories) != len(candidates):
            raise InvalidRequestError(
                f"histories and candidates differ in length ({len(histories)} vs {len(candidates)})",
                param="candidates",
            )
        if not len(candidates):
            return []
        hist = [self._items(h, history_vectors, r, "histories", "history_vectors") for r, h in enumerate(histories)]
        cand = [
            self._items(c, candidate_vectors, r, "candidates", "candidate_vectors") for r, c in enumerate(candidates)
        ]
        keep = self.config.max_len
        hist = [(ids[-keep:], vec[-keep:] if vec is not None else None) for ids, vec in hist]
        L = max(1, max(len(ids) for ids, _ in hist))
        C = max(1, max(len(ids) for ids, _ in cand))
        hist_ids, hist_vec = self._pad(hist, L, left=True)
        cand_ids, cand_vec = self._pad(cand, C, left=False)
        self.net.eval()
        with torch.inference_mode():
            h, _ = self.net.items(hist_ids, hist_vec)
            # A text model reads unseen history items (row 0) from their vectors; an ID-only one cannot.
            valid = _nonpad(hist, L) if self.config.use_text else hist_ids > 0
            state = self.net.encoder(h, valid)[:, -1]
            hc, bc = self.net.items(cand_ids, cand_vec)
            logits = (hc @ state.unsqueeze(-1)).squeeze(-1) + bc
        out = logits.numpy().astype(np.float64)
        return [out[r, : len(ids)] for r, (ids, _) in enumerate(cand)]

    def _items(self, idx: Any, vectors: Any, r: int, name: str, vname: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Checked shifted ids and (when the model uses text) their text vectors for request ``r``."""
        a = np.asarray(idx)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise InvalidRequestError(f"{name}[{r}] must be a 1-D array of item indices", param=f"{name}[{r}]")
        a = a.astype(np.int64)
        bad = (a < -1) | (a >= self.n_items)
        if bad.any():
            raise InvalidRequestError(
                f"{name}[{r}] has index {int(a[bad][0])} outside -1..{self.n_items - 1}", param=f"{name}[{r}]"
            )
        ids = _shift(a)
        if not self.config.use_text:
            return ids, None  # an unseen item of an ID-only model has no representation: h_i = 0
        vec = self._vectors_np[ids].copy()
        unseen = np.flatnonzero(a == -1)
        if unseen.size:
            given = vectors[r] if vectors is not None and r < len(vectors) else None
            if given is None:
                raise InvalidRequestError(
                    f"{name}[{r}] has unseen items (-1) but {vname}[{r}] gives no vectors", param=f"{vname}[{r}]"
                )
            g = np.asarray(given, dtype=np.float32)
            if g.shape != (len(a), self.config.text_dim):
                raise InvalidRequestError(
                    f"{vname}[{r}] must have shape ({len(a)}, {self.config.text_dim}), got {g.shape}",
                    param=f"{vname}[{r}]",
                )
            if not np.isfinite(g[unseen]).all():
                raise InvalidRequestError(f"{vname}[{r}] has non-finite values", param=f"{vname}[{r}]")
            vec[unseen] = g[unseen]
        return ids, vec

    def _pad(self, rows: list[tuple[np.ndarray, np.ndarray | None]], width: int, *, left: bool):
        ids = np.zeros((len(rows), width), dtype=np.int64)
        vec = np.zeros((len(rows), width, self.config.text_dim), dtype=np.float32) if self.config.use_text else None
        for r, (i, v) in enumerate(rows):
            sl = slice(width - len(i), width) if left else slice(0, len(i))
            ids[r, sl] = i
            if vec is not None:
                vec[r, sl] = v
        return torch.from_numpy(ids), (torch.from_numpy(vec) if vec is not None else None)

    # ---- persistence ------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``sequence.safetensors`` and ``sequence.json`` (each atomically) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        with atomic_write(folder / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp))
        meta = {"format": FORMAT, "n_items": self.n_items, "config": self.config.model_dump(), "record": self.record}
        with atomic_write(folder / CONFIG_FILE) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=float))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> SequenceModel:
        folder = Path(folder)
        try:
            meta = json.loads((folder / CONFIG_FILE).read_text())
            if meta.get("format") != FORMAT:
                raise ModelLoadError(f"{folder / CONFIG_FILE} is not a {FORMAT} file", param="folder")
            config = SequenceModelConfig.model_validate(meta["config"])
            state = load_file(str(folder / WEIGHTS_FILE))
        except (OSError, ValueError, KeyError, SafetensorError, ValidationError) as exc:
            raise ModelLoadError(f"cannot load a sequence model from {folder}: {exc}", param="folder") from exc
        net = SequenceNet(int(meta["n_items"]), config.text_dim, config)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"{folder / WEIGHTS_FILE} does not match its config: {exc}", param="folder") from exc
        return cls(net, config, int(meta["n_items"]), meta.get("record"))

    def state_copy(self) -> dict[str, torch.Tensor]:
        return copy.deepcopy(self.net.state_dict())


def _nonpad(rows: list[tuple[np.ndarray, Any]], width: int) -> torch.Tensor:
    """Left-padded validity mask: an unseen item (row 0) is a real position when it has a vector."""
    valid = np.zeros((len(rows), width), dtype=bool)
    for r, (i, _) in enumerate(rows):
        valid[r, width - len(i) :] = True
    return torch.from_numpy(valid)


def _check_item_vectors(item_vectors: np.ndarray | None, n_items: int, use_text: bool) -> np.ndarray:
    if not use_text:
        return np.zeros((n_items, 0), dtype=np.float32)
    if item_vectors is None:
        raise InvalidRequestError("use_text needs item_vectors (or set use_text=False)", param="item_vectors")
    v = np.asarray(item_vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] != n_items or v.shape[1] < 1:
        raise InvalidRequestError(f"item_vectors must have shape ({n_items}, d), got {v.shape}", param="item_vectors")
    if not np.isfinite(v).all():
        raise InvalidRequestError("item_vectors has non-finite values", param="item_vectors")
    return np.ascontiguousarray(v)


def _training_windows(
    sequences: list[list[int]], n_items: int, config: SequenceModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded (input, target) rows of shifted ids: position t's target is the item after it (0 = none)."""
    L = config.max_len
    inputs, targets = [], []
    for u, seq in enumerate(sequences):
        s = np.asarray(seq, dtype=np.int64)
        if s.ndim != 1:
            raise InvalidRequestError(f"sequences[{u}] must be a list of item indices", param=f"sequences[{u}]")
        if s.size and (s.min() < 0 or s.max() >= n_items):
            raise InvalidRequestError(f"sequences[{u}] has an index outside 0..{n_items - 1}", param=f"sequences[{u}]")
        s = s + 1
        ends = range(len(s), 1, -L) if config.all_windows else [len(s)] if len(s) > 1 else []
        for end in ends:
            w = s[max(0, end - L - 1) : end]
            row_in, row_tg = np.zeros(L, np.int64), np.zeros(L, np.int64)
            row_in[L - len(w) + 1 :], row_tg[L - len(w) + 1 :] = w[:-1], w[1:]
            inputs.append(row_in)
            targets.append(row_tg)
    if not inputs:
        raise InvalidRequestError("no sequence has two or more items to learn from", param="sequences")
    return np.stack(inputs), np.stack(targets)
