"""Catalogues for the agent tests: the bundled ml-latest-small sample and a tiny synthetic one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llm_recommender.agent import CatalogueIndex
from llm_recommender.protocol import Item

_SAMPLE: CatalogueIndex | None = None


def sample_catalogue() -> CatalogueIndex:
    global _SAMPLE
    if _SAMPLE is None:
        from llm_recommender.data import load_dataset

        ds = load_dataset("ml-latest-small")
        _SAMPLE = CatalogueIndex([ds.item(i) for i in ds.item_ids])
    return _SAMPLE


def tiny_items() -> list[Item]:
    rows = [
        ("1", "Alien (1979)", ["Horror", "Sci-Fi"]),
        ("2", "Aliens (1986)", ["Action", "Horror", "Sci-Fi"]),
        ("3", "Heat (1995)", ["Action", "Crime", "Thriller"]),
        ("4", "Heat, The (2013)", ["Action", "Comedy", "Crime"]),
        ("5", "Godfather, The (1972)", ["Crime", "Drama"]),
        ("6", "Godfather: Part II, The (1974)", ["Crime", "Drama"]),
        ("7", "Toy Story (1995)", ["Animation", "Children", "Comedy"]),
        ("8", "Toy Story 2 (1999)", ["Animation", "Children", "Comedy"]),
        ("9", "Hamlet (1948)", ["Drama"]),
        ("10", "Hamlet (1996)", ["Drama", "Romance"]),
        ("11", "Seven (a.k.a. Se7en) (1995)", ["Mystery", "Thriller"]),
        ("12", "Scary Movie (2000)", ["Comedy", "Horror"]),
        ("13", "Groundhog Day (1993)", ["Comedy", "Fantasy", "Romance"]),
        ("14", "Casablanca (1942)", ["Drama", "Romance"]),
        ("15", "Blade Runner (1982)", ["Action", "Sci-Fi", "Thriller"]),
        ("16", "Die Hard (1988)", ["Action", "Crime", "Thriller"]),
        ("17", "Sense and Sensibility (1995)", ["Drama", "Romance"]),
        ("18", "Back to the Future (1985)", ["Adventure", "Comedy", "Sci-Fi"]),
        ("19", "Fargo (1996)", ["Comedy", "Crime", "Drama", "Thriller"]),
        ("20", "Shining, The (1980)", ["Horror"]),
    ]
    return [Item(id=i, title=t, attributes={"genres": g}) for i, t, g in rows]


def tiny_catalogue() -> CatalogueIndex:
    return CatalogueIndex(tiny_items())


def write_genre_viewers(folder: Path, *, rating: float | None = 5) -> Path:
    """The tiny catalogue as a ``generic`` dataset with 40 generated viewers whose taste follows a genre
    (Horror, Crime, Comedy, Drama in turn) plus two random picks each, timestamped in order; ``rating``
    on every interaction (None: no rating column). Returns ``folder``."""
    items, rng, rows = tiny_items(), np.random.default_rng(0), []
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(
        json.dumps({"item_id": it.id, "title": it.title, "genres": it.attributes["genres"]}) + "\n" for it in items))
    for u in range(40):
        genre = ["Horror", "Crime", "Comedy", "Drama"][u % 4]
        liked = [it.id for it in items if genre in it.attributes["genres"]]
        picks = list(rng.permutation(liked)) + list(rng.choice([it.id for it in items], 2, replace=False))
        rows += [{"user_id": f"u{u}", "item_id": i, "timestamp": 100 + t, **({"rating": rating} if rating is not None else {})}
                 for t, i in enumerate(dict.fromkeys(picks))]
    (folder / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
