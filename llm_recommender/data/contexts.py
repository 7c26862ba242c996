"""Training contexts for next-item models, sampled from the training split only.

Each context is a position ``t`` in a user's sequence: its history ``seq[t-H:t]``, its positive
``seq[t]`` and ``negatives`` items drawn uniformly from the catalogue (not the positive), as the
LLMRank candidates are. The representation head learns from them, and so does generative tuning
(``llm-rec tune``) through :func:`build_contexts`, which samples before each user's validation
target so that neither the validation nor the test target is ever a positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .splits import Split, UserSplit


@dataclass
class TrainingContexts:
    """Contexts and labelled (context, item) examples; items are catalogue codes."""

    histories: list[np.ndarray]  # per context: item codes, oldest first
    sources: list[tuple[int, int]]  # per context: (sequence index, position of its positive)
    example_context: np.ndarray
    example_item: np.ndarray
    labels: np.ndarray
    user_ids: list[str] = field(default_factory=list)  # build_contexts: the user of each context
    # build_contexts: the interaction row of each context's positive (for leak checks)
    positive_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def sample_contexts(
    sequences: Sequence[np.ndarray], n_items: int, *, negatives: int = 4, max_per_user: int | None = 40,
    min_history: int = 3, max_history: int = 50, seed: int = 0,
) -> TrainingContexts:
    """Up to ``max_per_user`` contexts per sequence of item codes (positions from ``min_history`` on)."""
    rng = np.random.default_rng(seed)
    hists, sources, ex_c, ex_i, lab = [], [], [], [], []
    for k, seq in enumerate(sequences):
        positions = np.arange(min_history, len(seq))
        if max_per_user is not None and len(positions) > max_per_user:
            positions = np.sort(rng.choice(positions, size=max_per_user, replace=False))
        for t in positions:
            c = len(hists)
            hists.append(seq[max(0, t - max_history) : t])
            sources.append((k, int(t)))
            pos = int(seq[t])
            neg = rng.integers(0, n_items - 1, size=negatives)
            neg = neg + (neg >= pos)  # uniform over the catalogue without the positive
            ex_c += [c] * (1 + negatives)
            ex_i += [pos, *neg.tolist()]
            lab += [1.0] + [0.0] * negatives
    return TrainingContexts(histories=hists, sources=sources, example_context=np.asarray(ex_c, dtype=np.int64),
                            example_item=np.asarray(ex_i, dtype=np.int64), labels=np.asarray(lab, dtype=np.float32))


def build_contexts(
    splits: dict[str, UserSplit], item_index: dict[str, int], *, train_split: Split = "valid", negatives: int = 4,
    max_per_user: int | None = 40, min_history: int = 3, max_history: int = 50, seed: int = 0,
) -> TrainingContexts:
    """Contexts from interactions strictly before each user's ``train_split`` target (users in id order)."""
    users = sorted(splits)
    befores = [splits[uid].before(train_split) for uid in users]  # excludes the target and everything after
    codes = [np.fromiter((item_index[x.item_id] for x in b), dtype=np.int64, count=len(b)) for b in befores]
    ctx = sample_contexts(codes, len(item_index), negatives=negatives, max_per_user=max_per_user,
                          min_history=min_history, max_history=max_history, seed=seed)
    ctx.user_ids = [users[k] for k, _ in ctx.sources]
    ctx.positive_rows = np.asarray([befores[k][t].row for k, t in ctx.sources], dtype=np.int64)
    return ctx
