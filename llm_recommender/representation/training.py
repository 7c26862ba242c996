"""Training examples for the representation head, built from the training split only.

For evaluation on ``split`` ("test"), the head learns from every user's interactions
strictly before their *validation* target (``train_split="valid"``): neither the
validation nor the test target of any user is ever a positive, and a context's history
only holds interactions before its positive. The validation targets stay unseen, so they
can fit a calibrator or a hybrid afterwards without leakage.

Each example is a context (user, position ``t`` in their sequence) with history
``seq[t-H:t]``, its positive ``seq[t]`` and ``negatives`` items drawn uniformly from the
catalogue (not the positive), as the LLMRank candidates are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..data.base import RecDataset
from ..evaluation.protocols import Split, UserSplit, leave_one_out
from .encoder import ItemEncoder
from .head import HeadConfig, RepresentationHead, train_head


@dataclass
class TrainingContexts:
    """Contexts and labelled (context, item) examples; items are catalogue codes."""

    user_ids: list[str]
    histories: list[np.ndarray]  # per context: item codes, oldest first
    positive_rows: np.ndarray  # interaction row of each context's positive (for leak checks)
    example_context: np.ndarray
    example_item: np.ndarray
    labels: np.ndarray


def user_vector(item_vectors: np.ndarray, history_codes: np.ndarray, decay: float, max_history: int) -> np.ndarray:
    """h_u: recency-weighted mean of the history items' h_i (most recent weight 1)."""
    codes = np.asarray(history_codes)[-max_history:]
    if len(codes) == 0:
        return np.zeros(item_vectors.shape[1], dtype=np.float32)
    w = decay ** np.arange(len(codes))[::-1]
    return ((w[:, None] * item_vectors[codes]).sum(0) / w.sum()).astype(np.float32)


def build_contexts(
    splits: dict[str, UserSplit],
    item_index: dict[str, int],
    *,
    train_split: Split = "valid",
    negatives: int = 4,
    max_per_user: int | None = 40,
    min_history: int = 3,
    max_history: int = 50,
    seed: int = 0,
) -> TrainingContexts:
    """Sample training contexts from interactions strictly before each user's ``train_split`` target."""
    rng = np.random.default_rng(seed)
    n_items = len(item_index)
    users, hists, rows, ex_c, ex_i, lab = [], [], [], [], [], []
    for uid in sorted(splits):
        before = splits[uid].before(train_split)  # excludes the train_split target and everything after
        positions = np.arange(min_history, len(before))
        if max_per_user is not None and len(positions) > max_per_user:
            positions = np.sort(rng.choice(positions, size=max_per_user, replace=False))
        codes = np.fromiter((item_index[x.item_id] for x in before), dtype=np.int64, count=len(before))
        for t in positions:
            c = len(users)
            users.append(uid)
            hists.append(codes[max(0, t - max_history) : t])
            rows.append(before[t].row)
            pos = int(codes[t])
            neg = rng.integers(0, n_items - 1, size=negatives)
            neg = neg + (neg >= pos)  # uniform over the catalogue without the positive
            ex_c += [c] * (1 + negatives)
            ex_i += [pos, *neg.tolist()]
            lab += [1.0] + [0.0] * negatives
    return TrainingContexts(
        user_ids=users,
        histories=hists,
        positive_rows=np.asarray(rows, dtype=np.int64),
        example_context=np.asarray(ex_c, dtype=np.int64),
        example_item=np.asarray(ex_i, dtype=np.int64),
        labels=np.asarray(lab, dtype=np.float32),
    )


def fit_head(
    dataset: RecDataset,
    encoder: ItemEncoder,
    config: HeadConfig,
    *,
    train_split: Split = "valid",
    negatives: int = 4,
    max_per_user: int | None = 40,
    splits: dict[str, UserSplit] | None = None,
    log: Any = None,
) -> tuple[RepresentationHead, TrainingContexts]:
    """Encode the catalogue (cached), sample training contexts before ``train_split`` targets, fit the head."""
    t0 = time.perf_counter()
    splits = splits if splits is not None else leave_one_out(dataset)
    item_ids = list(dataset.item_ids)
    index = {iid: k for k, iid in enumerate(item_ids)}
    H = encoder.encode_items([dataset.item(i) for i in item_ids])
    t_enc = time.perf_counter() - t0
    if log:
        log(f"encoded {len(item_ids)} items in {t_enc:.1f} s (layer {encoder.layer}, {encoder.pooling} pooling)")
    ctx = build_contexts(
        splits,
        index,
        train_split=train_split,
        negatives=negatives,
        max_per_user=max_per_user,
        max_history=config.max_history,
        seed=config.seed,
    )
    U = np.stack([user_vector(H, h, config.recency_decay, config.max_history) for h in ctx.histories])
    config = replace(config, layer=encoder.layer, pooling=encoder.pooling)
    head = train_head(config, U, H, ctx.example_item, ctx.labels, ctx.example_context, log=log)
    head.record |= {
        "dataset": dataset.name,
        "train_split": train_split,
        "negatives": negatives,
        "max_per_user": max_per_user,
        "contexts": len(ctx.user_ids),
        "encode_seconds": round(t_enc, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    return head, ctx
