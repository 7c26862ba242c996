"""Training examples of the LLM ranker, from the training sequences only.

Each user's *training* sequence (interactions before their validation target: the fit's
``TrainingData.sequences``) is split into a prefix and a tail of ``tail`` interactions. The
hints and hard negatives of the examples come from a retriever and popularity counts fitted on
the prefixes only, and the examples are the tail positions: so the retriever has not seen the
item an example asks for, as at serving time, where the retriever (fitted on everything
before the validation targets) has not seen the request's next item either. Without that split
the "match" hint of a training target would be optimistic and the LLM would learn to trust it
more than it deserves.

An example: history rows (most recent ``history``), candidate rows = the target, ``hard``
negatives drawn from the retriever's top ``hard_pool`` for that history, and uniform negatives,
shuffled so that the target's position is uniform; one hint string per candidate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hints import CollaborativeHints


def split_tails(sequences: list[np.ndarray], tail: int) -> list[np.ndarray]:
    """The prefixes the example-time retriever is fitted on (each sequence without its last ``tail`` items)."""
    return [s[: max(0, len(s) - tail)] for s in sequences]


def build_examples(
    sequences: list[np.ndarray],
    hints: CollaborativeHints,
    *,
    tail: int,
    history: int,
    retrieval_history: int,
    candidates: int,
    hard: int,
    hard_pool: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Examples (catalogue rows only; ``user`` and ``t`` locate the target in ``sequences``), shuffled."""
    rng = np.random.default_rng(seed)
    n_items = len(hints.counts)
    examples = []
    for u, seq in enumerate(sequences):
        for t in range(max(1, len(seq) - tail), len(seq)):
            target = int(seq[t])
            past = seq[max(0, t - retrieval_history) : t]
            ranks = hints.catalogue_ranks([hints.space.items[r] for r in past])
            banned = set(past.tolist()) | {target}
            pool = [int(r) for r in hints.top_rows(ranks, hard_pool + len(banned)) if int(r) not in banned]
            n_hard = min(hard, len(pool), candidates - 1)
            chosen = [pool[i] for i in rng.choice(len(pool), size=n_hard, replace=False)] if n_hard else []
            banned |= set(chosen)
            need = candidates - 1 - len(chosen)
            rest = np.setdiff1d(np.arange(n_items), np.fromiter(banned, dtype=np.int64))
            if need > 0 and len(rest):
                chosen += rng.choice(rest, size=min(need, len(rest)), replace=False).tolist()
            rows = np.array([target, *chosen], dtype=np.int64)
            order = rng.permutation(len(rows))
            rows = rows[order]
            examples.append({
                "user": u, "t": t,
                "history": [int(r) for r in seq[max(0, t - history) : t]],
                "cf_history": [int(r) for r in past],  # what the item model reads (cf_scores)
                "candidates": rows.tolist(),
                "hints": hints.words(rows, ranks),
                "target": int(np.flatnonzero(order == 0)[0]),
            })
    return [examples[i] for i in rng.permutation(len(examples))]
