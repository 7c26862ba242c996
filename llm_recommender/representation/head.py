"""The learned head P(u, i) = sigmoid(w_u.u + w_i.i + w_ui.(u*i) + b).

``u`` and ``i`` are the (optionally PCA-projected) LLM representations h_u and h_i; each
feature of ``[u; i; u*i]`` is standardised with statistics of the
training examples, then the weights are fitted by L2-penalised logistic regression on
positives (the next item a user chose) and sampled negatives. ``u`` alone cannot change a
ranking within one request; it is there so the probability is calibrated per user.
Side features (popularity, zero-shot LLM scores) are combined on top by the hybrid
scorer (:mod:`llm_recommender.calibration.hybrid`), fitted on validation targets.

Saved as ``head.json`` (settings, feature names, sizes, training record) plus
``head.safetensors`` (projection, standardisation statistics, weights): a few hundred KB.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from ..settings import DEFAULT_MODEL

HEAD_JSON = "head.json"
HEAD_TENSORS = "head.safetensors"


@dataclass
class HeadConfig:
    """How the head was built; ``encoder`` fields tell the scorer how to compute h_i and h_u."""

    model: str = DEFAULT_MODEL
    layer: int | None = None  # hidden_states index; None: the middle layer (measured best on SmolLM2)
    pooling: str = "mean"
    recency_decay: float = 0.9  # h_u = sum_k decay^age_k h_{i_k} / sum_k decay^age_k
    max_history: int = 50
    dim: int | None = None  # PCA dimensions of h (None: all, centred only)
    l2: float = 1e-4
    epochs: int = 6
    batch_size: int = 1024
    lr: float = 3e-3
    seed: int = 0


class RepresentationHead:
    """Projection + standardisation + logistic weights over ``[u; i; u*i]``."""

    def __init__(
        self,
        config: HeadConfig,
        projection: np.ndarray,
        center: np.ndarray,
        mean: np.ndarray,
        scale: np.ndarray,
        weights: np.ndarray,
        bias: float,
        record: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
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
        from safetensors.numpy import save_file

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
            "config": asdict(self.config),
            "hidden_size": self.hidden_size,
            "record": self.record,
        }
        (folder / HEAD_JSON).write_text(json.dumps(meta, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RepresentationHead:
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / HEAD_JSON).is_file() or not (folder / HEAD_TENSORS).is_file():
            raise ModelLoadError(
                f"{folder} is not a representation head (needs {HEAD_JSON} and {HEAD_TENSORS})", param="head"
            )
        try:
            meta = json.loads((folder / HEAD_JSON).read_text())
            config = HeadConfig(**meta["config"])
            t = load_file(str(folder / HEAD_TENSORS))
            return cls(
                config,
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


def head_fingerprint(folder: str | Path | None) -> str | None:
    """A short hash of a saved head's files (what cached scores of that head depend on)."""
    if folder is None or not (Path(folder) / HEAD_TENSORS).is_file():
        return None
    import hashlib

    h = hashlib.sha256()
    for name in (HEAD_JSON, HEAD_TENSORS):
        h.update((Path(folder) / name).read_bytes())
    return h.hexdigest()[:16]


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
    config: HeadConfig,
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
    import torch

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
        config, proj, center, mean.numpy(), scale.numpy(), w.detach().numpy(), float(b.detach()), record
    )
