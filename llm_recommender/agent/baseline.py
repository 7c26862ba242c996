"""A content ranking over genres, for when no fitted bundle is wired in (and for tests).

Score = genre overlap with the liked history (Jaccard, averaged); probability = the score,
since nothing is calibrated here. Ties break by catalogue order, so it is deterministic.
"""

from __future__ import annotations

from ..protocol import HistoryEntry, Item, RankedItem, RankResponse
from .catalogue import item_genres


def genre_rank(history: list[HistoryEntry], pool: list[Item], k: int) -> RankResponse:
    liked = [set(item_genres(h)) for h in history]
    scored = []
    for pos, item in enumerate(pool):
        genres = set(item_genres(item))
        score = sum(len(genres & g) / len(genres | g) for g in liked if genres | g) / len(liked) if liked else 0.0
        scored.append((-score, pos, item))
    scored.sort(key=lambda t: (t[0], t[1]))
    items = [RankedItem(id=it.id, title=it.title, rank=n, score=-s, probability=round(-s, 4))
             for n, (s, _, it) in enumerate(scored[:k], 1)]
    return RankResponse(items=items, strategy="genre-overlap", model="none", backend="none",
                        history_used=len(history), history_total=len(history))
