"""The representation component: a learned head P(u, i) = sigmoid(w_u.u + w_i.i + w_ui.(u*i) + b).

``u`` and ``i`` are the (optionally PCA-projected) LLM representations h_u and h_i; each
feature of ``[u; i; u*i]`` is standardised with statistics of the
training examples, then the weights are fitted by L2-penalised logistic regression on
positives (the next item a user chose) and sampled negatives. ``u`` alone cannot change a
ranking within one request; it is there so the probability is calibrated per user.
Other components are combined with it by the bundle's fusion (:mod:`..fused`), fitted on
validation targets. h_i are the bundle's ``llm`` item vectors (:mod:`.encoder`); h_u is the
recency-weighted mean of the history's h_i.

Saved as ``head.json`` (settings, feature names, sizes, training record) plus
``head.safetensors`` (projection, standardisation statistics, weights): a few hundred KB.
torch is needed to fit the head only (an optional package); scoring is numpy.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from ...configurable import ComponentConfig
from ...data.contexts import sample_contexts
from ...errors import ModelLoadError
from ..component import Component, TrainingData

HEAD_JSON = "head.json"
HEAD_TENSORS = "head.safetensors"


class RepresentationHeadConfig(ComponentConfig):
    recency_decay: float = 0.9  # h_u = sum_k decay^age_k h_{i_k} / sum_k decay^age_k
    max_history: int = 50
    dim: int | None = 64  # PCA dimensions of h_i (label-free projection); None: all, centred only
    l2: float = 1e-4
    epochs: int = 6
    lr: float = 3e-3
    negatives: int = 4
    contexts_per_user: int = 40
    min_history: int = 3
    seed: int = 0
    batch_size: int = 1024


def user_vector(item_vectors: np.ndarray, history_codes: np.ndarray, decay: float, max_history: int) -> np.ndarray:
    """h_u: recency-weighted mean of the history items' h_i (most recent weight 1)."""
    codes = np.asarray(history_codes)[-max_history:]
    if len(codes) == 0:
        return np.zeros(item_vectors.shape[1], dtype=np.float32)
    w = decay ** np.arange(len(codes))[::-1]
    return ((w[:, None] * item_vectors[codes]).sum(0) / w.sum()).astype(np.float32)


class RepresentationHead:
    """Projection + standardisation + logistic weights over ``[u; i; u*i]``."""

    def __init__(
        self,
        projection: np.ndarray,
        center: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        weights: np.ndarray,
        bias: float,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.projection = np.asarray(projection, dtype=np.float32)  # (hidden, dim)
        self.center = np.asarray(center, dtype=np.float32)  # (hidden,)
        self.mean = np.asarray(mean, dtype=np.float32)  # (n_features,)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = float(bias)
        self.record = record or {}
        k = self.projection.shape[1]
        want = 3 * k
        for name, arr in (("mean", self.mean), ("scale", self.scale), ("weights", self.weights)):
            if arr.shape != (want,):
                raise ModelLoadError(f"head {name} has shape {arr.shape}, expected ({want},)", param="head")

    # ---- features -----------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.projection.shape[0])

    def project(self, h: np.ndarray) -> np.ndarray:
        return (np.asarray(h, dtype=np.float32) - self.center) @ self.projection

    def logits(self, u: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Logits for one user representation ``u`` (hidden,) and items (n, hidden)."""
        pu, pi = self.project(u[None, :]), self.project(items)
        x = build_features(np.broadcast_to(pu, pi.shape), pi)
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    # ---- persistence ----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "projection": self.projection,
            "center": self.center,
            "mean": self.mean,
            "scale": self.scale,
            "weights": self.weights,
            "bias": np.asarray([self.bias], dtype=np.float32),
        }
        # safetensors writes the raw buffer: a transposed (Fortran-order) PCA projection would load scrambled
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / HEAD_TENSORS))
        meta = {
            "format": "llm-recommender/representation-head",
            "version": 1,
            "hidden_size": self.hidden_size,
            "record": self.record,
        }
        (folder / HEAD_JSON).write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RepresentationHead:
        folder = Path(folder)
        if not (folder / HEAD_JSON).is_file() or not (folder / HEAD_TENSORS).is_file():
            raise ModelLoadError(
                f"{folder} is not a representation head (needs {HEAD_JSON} and {HEAD_TENSORS})", param="head"
            )
        try:
            meta = json.loads((folder / HEAD_JSON).read_text())
            t = load_file(str(folder / HEAD_TENSORS))
            return cls(
                t["projection"],
                t["center"],
                t["mean"],
                t["scale"],
                t["weights"],
                float(t["bias"][0]),
                meta.get("record"),
            )
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"could not read representation head {folder}: {exc}", param="head") from exc


def build_features(pu: np.ndarray, pi: np.ndarray) -> np.ndarray:
    return np.concatenate([pu, pi, pu * pi], axis=1).astype(np.float32)


def fit_projection(h: np.ndarray, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Centre and PCA-project item vectors (label-free). ``dim=None``: identity."""
    h = np.asarray(h, dtype=np.float64)
    center = h.mean(axis=0)
    if dim is None or dim >= h.shape[1]:
        return np.eye(h.shape[1], dtype=np.float32), center.astype(np.float32)
    _, s, vt = np.linalg.svd(h - center, full_matrices=False)
    proj = vt[:dim].T / (s[:dim] / math.sqrt(len(h)) + 1e-6)  # whitened components
    return proj.astype(np.float32), center.astype(np.float32)


def train_head(
    config: RepresentationHeadConfig,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    example_items: np.ndarray,
    labels: np.ndarray,
    example_users: np.ndarray,
    projection_items: np.ndarray | None = None,
    log: Any = None,
) -> RepresentationHead:
    """Fit the head on training examples.

    ``user_vectors`` (n_users_ex, hidden): h_u per training context; ``item_vectors``
    (n_items, hidden): h_i per catalogue item; example ``k`` pairs context
    ``example_users[k]`` with item ``example_items[k]`` and label ``labels[k]``. The projection is fitted on ``projection_items`` (default: the
    items that occur in the examples), the standardisation on the examples.
    """
    import torch  # optional: the [torch] extra, needed to fit only

    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    used = np.unique(example_items) if projection_items is None else projection_items
    proj, center = fit_projection(item_vectors[used], config.dim)
    PU = torch.from_numpy((user_vectors - center) @ proj)
    PI = torch.from_numpy((item_vectors - center) @ proj)
    ex_u = torch.from_numpy(np.asarray(example_users, dtype=np.int64))
    ex_i = torch.from_numpy(np.asarray(example_items, dtype=np.int64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float32))

    def feats(idx: torch.Tensor) -> torch.Tensor:
        pu, pi = PU[ex_u[idx]], PI[ex_i[idx]]
        return torch.cat([pu, pi, pu * pi], dim=1)

    # standardisation statistics from (a sample of) the training examples only
    sample = torch.from_numpy(rng.choice(len(y), size=min(len(y), 50_000), replace=False))
    xs = feats(sample)
    mean, scale = xs.mean(0), xs.std(0).clamp(min=1e-6)
    k = xs.shape[1]
    w = torch.zeros(k, requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=config.lr)
    losses: list[float] = []
    n = len(y)
    for epoch in range(config.epochs):
        perm = torch.from_numpy(rng.permutation(n))
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            x = (feats(idx) - mean) / scale
            logit = x @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y[idx])
            obj = loss + config.l2 * (w * w).sum()
            opt.zero_grad()
            obj.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if log:
            log(f"epoch {epoch + 1}/{config.epochs}: training log loss {losses[-1]:.4f}")
    record = {
        "examples": int(n),
        "positives": int(y.sum()),
        "epoch_losses": losses,
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return RepresentationHead(
        proj, center, mean.numpy(), scale.numpy(), w.detach().numpy(), float(b.detach()), record
    )


class RepresentationComponent(Component):
    """sigmoid(theta^T [h_u; h_i; h_u*h_i]) over the LLM's item representations (h_u from the history)."""

    name = "representation"
    kind = "text"
    vectors = ("llm",)
    config_class = RepresentationHeadConfig
    config: RepresentationHeadConfig
    head: RepresentationHead

    def fit(self, data: TrainingData) -> RepresentationComponent:
        cfg = self.config
        H = self.space.vectors["llm"]
        ctx = sample_contexts(data.sequences, len(self.space), negatives=cfg.negatives, max_per_user=cfg.contexts_per_user,
                              min_history=cfg.min_history, max_history=cfg.max_history, seed=cfg.seed)
        U = np.stack([user_vector(H, h, cfg.recency_decay, cfg.max_history) for h in ctx.histories])
        self.head = train_head(cfg, U, H, ctx.example_item, ctx.labels, ctx.example_context,
                               projection_items=np.arange(len(self.space)))
        return self

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        cfg = self.config
        hist_items = request.history[-cfg.max_history :]
        h_i = self.space.vectors_for("llm", request.candidates, candidates)
        notes: list[str] = []
        if hist_items:
            h_h = self.space.vectors_for("llm", hist_items, history[-len(hist_items) :])
            u = user_vector(h_h, np.arange(len(hist_items)), cfg.recency_decay, cfg.max_history)
        else:
            u = np.zeros(h_i.shape[1], dtype=np.float32)
            notes.append("empty history: representation scores reflect the items alone")
        return self.head.logits(u, h_i).astype(float), notes, {}

    def save_state(self, folder: Path) -> None:
        self.head.save(folder / "head")

    def load_state(self, folder: Path) -> None:
        self.head = RepresentationHead.load(folder / "head")

