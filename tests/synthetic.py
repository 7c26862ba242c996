"""A tiny generated dataset in the generic format: users drift over item 'genres'; timestamps interleave."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

N_USERS, N_ITEMS, PER_USER = 24, 40, 12


def write_generic_dataset(root: Path, n_users: int = N_USERS, n_items: int = N_ITEMS, per_user: int = PER_USER) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    genres = ["Drama", "Comedy", "Action", "Horror"]
    items = [{"item_id": f"i{k}", "title": f"Item {k}", "genres": [genres[k % 4]]} for k in range(n_items)]
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    rows = []
    for u in range(n_users):
        taste = u % 4
        pool = [k for k in range(n_items) if k % 4 == taste] + list(rng.choice(n_items, 6, replace=False))
        picks = rng.choice(pool, per_user, replace=False)
        for j, k in enumerate(picks):
            rows.append({"user_id": f"u{u}", "item_id": f"i{k}", "timestamp": 1000 + 7 * j + u,
                         "rating": int(rng.integers(1, 6))})
    (root / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def hash_encoder(texts: list[str]) -> np.ndarray:
    """A deterministic bag-of-words text encoder (stands in for MiniLM)."""
    out = np.zeros((len(texts), 16), dtype=np.float32)
    for r, t in enumerate(texts):
        for w in t.lower().replace(".", " ").replace(":", " ").split():
            out[r, zlib.crc32(w.encode()) % 16] += 1.0
    return out
