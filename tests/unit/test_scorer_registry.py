"""ONE registry of scorers: every registered name ranks a tiny request through the Recommender and
round-trips its config through JSON; an unknown name is an error that lists the valid ones."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.bundle import Bundle, BundleManifest
from llm_recommender.errors import UnknownNameError
from llm_recommender.scorers import FUSED, SCORERS, scorer_class, scorer_names
from llm_recommender.scorers.component import Component
from llm_recommender.scorers.fused import Fusion
from llm_recommender.testing import hashed_score_fn, sample_requests, tiny_catalogue

SMALL = {"sequence": {"model": {"epochs": 2}}, "representation": {"epochs": 2}}  # quick fits on tiny data


def small_configs(request, tmp_path) -> dict:
    """SMALL, and the llm_ranker on the tiny random model (one step; it needs the embedded model's tokenizer)."""
    model = request.getfixturevalue("tiny_model_dir")  # skipped (failed under CI) without the embedded model
    ranker = {"model": str(model), "method": "full", "steps": 1, "batch_size": 2, "tail": 1, "history": 3,
              "candidates": 4, "hard_negatives": 1, "dtype": "float32", "threads": 1, "progress": False,
              "max_minutes": None, "work_dir": str(tmp_path / "llm_ranker")}
    return SMALL | {"llm_ranker": ranker}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, request) -> Bundle:
    """Every registered fitted component on the tiny catalogue (seeded llm and minilm vectors), fused."""
    space, data = tiny_catalogue()
    space.vectors["llm"] = np.random.default_rng(1).normal(size=(len(space), 16)).astype(np.float32)
    configs = small_configs(request, tmp_path_factory.mktemp("work"))
    names = [n for n in scorer_names(needs_fit=True) if issubclass(scorer_class(n), Component)]  # random: unfitted
    components = {n: scorer_class(n)(space, configs.get(n)).fit(data) for n in names}  # type: ignore[call-arg]
    requests = sample_requests()
    results = {n: c.score_many(requests) for n, c in components.items()}
    labels = [np.eye(len(r.candidates))[0] for r in requests]
    fusion = Fusion.fit(results, labels, list(components))
    return Bundle(tmp_path_factory.mktemp("bundle"), BundleManifest(model="fake"), space, components, fusion)


def test_the_registry_holds_every_strategy_once():
    assert set(scorer_names()) == set(SCORERS)
    assert {FUSED, "popularity", "cooccurrence", "itemknn", "als", "bpr", "embedding", "representation", "sequence",
            "llm_ranker", "verbalizer", "pointwise", "listwise", "random"} <= set(SCORERS)
    # built on the pipeline's backend; llm_ranker runs an LLM too, but its own fine-tuned one, saved in the bundle
    assert set(scorer_names(needs_llm=True)) == {"verbalizer", "pointwise", "listwise"}
    assert "llm_ranker" in scorer_names(needs_fit=True) and issubclass(scorer_class("llm_ranker"), Component)
    assert "random" in scorer_names(needs_fit=False) and FUSED in scorer_names(needs_fit=True)
    assert {n for n in SCORERS if not issubclass(scorer_class(n), Component)} == {FUSED, *scorer_names(needs_llm=True)}
    for name in SCORERS:
        cls = scorer_class(name)
        assert cls.name == name and cls.side in ("item", "request")
        assert cls.side == "item" or not cls.needs_fit  # a fitted scorer reads the bundle's items


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_registered_name_ranks_a_tiny_request(name, bundle):
    rec = Recommender(bundle=bundle, backend=FakeBackend(score_fn=hashed_score_fn), strategy=name)
    request = sample_requests()[0]
    response = rec.rank_request(request.model_copy(update={"top_k": len(request.candidates)}))
    assert response.strategy == name
    assert sorted(i.id for i in response.items) == sorted(c.id for c in request.candidates)
    assert all(0.0 <= i.probability <= 1.0 for i in response.items)
    scorer = rec.scorer(name)
    assert type(scorer) is scorer_class(name)
    cls = type(scorer)
    assert cls.config_class.model_validate_json(scorer.config.model_dump_json()) == scorer.config


def test_an_unknown_name_lists_the_valid_ones(bundle):
    with pytest.raises(UnknownNameError) as exc:
        scorer_class("nope")
    assert exc.value.param == "strategy" and all(n in exc.value.message for n in SCORERS)
    rec = Recommender(bundle=bundle, backend=FakeBackend(score_fn=hashed_score_fn), strategy=FUSED)
    with pytest.raises(UnknownNameError) as exc:
        rec.rank_request(sample_requests()[0].model_copy(update={"strategy": "nope"}))
    assert all(n in exc.value.message for n in SCORERS)
    without = Recommender(backend=FakeBackend(score_fn=hashed_score_fn))
    with pytest.raises(UnknownNameError) as exc:
        without.rank_request(sample_requests()[0].model_copy(update={"strategy": "popularity"}))
    assert "(with a bundle)" in exc.value.message and "verbalizer" in exc.value.message
