"""The bundled sample data: MovieLens latest-small (GroupLens; see ml-latest-small/README.txt).

Only what the demo needs lives here: a user's time-ordered ratings and the movie titles.
The eval harness has full dataset loaders.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import InvalidRequestError

ML_LATEST_SMALL = Path(__file__).resolve().parent / "ml-latest-small"


@dataclass(frozen=True)
class Rating:
    movie_id: str
    rating: float
    timestamp: int


@lru_cache(maxsize=1)
def movies() -> dict[str, dict[str, str]]:
    """movieId -> {"title", "genres"}."""
    with open(ML_LATEST_SMALL / "movies.csv", newline="", encoding="utf-8") as fh:
        return {row["movieId"]: {"title": row["title"], "genres": row["genres"]} for row in csv.DictReader(fh)}


@lru_cache(maxsize=1)
def ratings_by_user() -> dict[str, list[Rating]]:
    """userId -> ratings sorted by time (ties by movie id)."""
    out: dict[str, list[Rating]] = {}
    with open(ML_LATEST_SMALL / "ratings.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["userId"], []).append(Rating(row["movieId"], float(row["rating"]), int(row["timestamp"])))
    for rs in out.values():
        rs.sort(key=lambda r: (r.timestamp, int(r.movie_id)))
    return out


def sample_request(user: str, n_candidates: int = 20, history_len: int = 50, seed: int = 0, top_k: int = 10, reasons: bool = True) -> tuple[dict, str]:
    """Hold out the user's most recent liked movie; candidates = it + random unseen movies."""
    ratings = ratings_by_user().get(user)
    if not ratings:
        raise InvalidRequestError(f"user {user!r} is not in the sample data (ids 1..{len(ratings_by_user())})", param="user")
    liked = [i for i, r in enumerate(ratings) if r.rating >= 4.0 and i > 0]
    if not liked:
        raise InvalidRequestError(f"user {user!r} has no liked movie to hold out", param="user")
    t = liked[-1]
    target = ratings[t].movie_id
    catalogue = movies()
    seen = {r.movie_id for r in ratings}
    rng = random.Random(seed)
    negatives = rng.sample(sorted(set(catalogue) - seen, key=int), n_candidates - 1)
    cands = [target, *negatives]
    rng.shuffle(cands)

    def item(mid: str) -> dict:
        m = catalogue[mid]
        genres = [g for g in m["genres"].split("|") if g != "(no genres listed)"]
        return {"id": mid, "title": m["title"], **({"attributes": {"genres": genres}} if genres else {})}

    history = [item(r.movie_id) | {"rating": r.rating, "timestamp": r.timestamp} for r in ratings[max(0, t - history_len) : t]]
    return {"history": history, "candidates": [item(m) for m in cands], "top_k": top_k, "reasons": reasons}, target
