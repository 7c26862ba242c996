"""The bundled sample data: MovieLens latest-small (GroupLens; see ml-latest-small/README.txt).

Only what the demo needs lives here: a user's time-ordered ratings and the movie titles.
The eval harness has full dataset loaders.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
