"""The committed dialogue set, run with the deterministic parser, on the bundled sample catalogue.

Two rankings stand in for the fitted bundle: the genre-overlap content ranking, and a real
Recommender (verbalizer) on the fake backend, so the agent is exercised through the
project's own ranking pipeline with only the model faked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_recommender.agent.baseline import genre_rank
from llm_recommender.agent.scoring import load_dialogues, run_dialogues
from llm_recommender.protocol import RankRequest
from tests.agent_fixtures import sample_catalogue

DIALOGUES = Path(__file__).resolve().parents[2] / "eval" / "dialogues" / "dialogues.jsonl"


@pytest.fixture(scope="module")
def result():
    return run_dialogues(load_dialogues(DIALOGUES), sample_catalogue(), genre_rank)


def test_the_set_is_big_enough_and_well_formed():
    dialogues = load_dialogues(DIALOGUES)
    assert len(dialogues) >= 30
    assert all(1 <= len(d["turns"]) <= 4 for d in dialogues)
    kinds = {t["expect"]["kind"] for d in dialogues for t in d["turns"]}
    assert kinds == {"recommendation", "clarification", "off_topic"}
    hard = [m for d in dialogues for t in d["turns"] for m in t["expect"].get("mentions", []) if m.get("hard")]
    assert len(hard) >= 15


def test_goals(result):
    m = result["metrics"]
    assert m["mention_linking_accuracy_typos_or_missing_year"] >= 0.95, result["failures"]
    assert m["recommended_in_catalogue"] == 1.0
    assert m["recommended_never_mentioned_or_seen"] == 1.0, result["failures"]
    assert m["recommended_respect_constraints"] == 1.0, result["failures"]
    assert m["ambiguous_asks_back"] == 1.0, result["failures"]
    assert m["off_topic_handled"] == 1.0, result["failures"]
    assert result["counts"]["recommended"] > 50  # the checks above ran over real answers


def test_every_turn_behaves_as_expected(result):
    assert result["failures"] == []


def test_through_a_recommender_on_the_fake_backend():
    from llm_recommender.backends.fake import FakeBackend
    from llm_recommender.recommender import Recommender

    rec = Recommender(backend=FakeBackend(), strategy="verbalizer")  # scores all labels alike

    def rank_fn(history, pool, k):
        # A stand-in for the bundle's retrieval: the verbalizer takes at most 26 candidates.
        return rec.rank_request(RankRequest(history=history, candidates=pool[:20], top_k=k))

    dialogues = [d for d in load_dialogues(DIALOGUES) if d["id"] in {"hated-and-genre", "multi-four-turns", "ask-star-wars"}]
    out = run_dialogues(dialogues, sample_catalogue(), rank_fn)
    assert out["failures"] == [] and out["counts"]["recommended"] > 0
    assert out["metrics"]["recommended_respect_constraints"] == 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """What `llm-rec serve --bundle` runs for a chat turn, on a bundle fitted on the bundled sample with
    the components that need no text encoder (seconds): its catalogue index and rank_pool with reasons."""
    from llm_recommender import Recommender
    from llm_recommender.agent import CatalogueIndex
    from llm_recommender.bundle import FitConfig, fit_bundle

    cfg = FitConfig(dataset="ml-latest-small", components=["popularity", "cooccurrence"], valid_users=100, min_gain=-1.0)
    rec = Recommender.load(fit_bundle(cfg, tmp_path_factory.mktemp("dialogues") / "bundle", log=lambda m: None))
    return CatalogueIndex.from_bundle(rec.bundle), (lambda h, pool, k: rec.rank_pool(h, pool, k, reasons=True))


def test_the_whole_set_through_a_fitted_bundle_as_served(served):
    catalogue, rank_fn = served
    out = run_dialogues(load_dialogues(DIALOGUES), catalogue, rank_fn)
    m = out["metrics"]
    assert out["failures"] == []
    assert m["mention_linking_accuracy_typos_or_missing_year"] >= 0.95
    assert m["recommended_in_catalogue"] == m["recommended_never_mentioned_or_seen"] == 1.0
    assert m["recommended_respect_constraints"] == m["ambiguous_asks_back"] == 1.0
    assert out["counts"]["recommended"] > 50 and out["counts"]["popularity_variants"] == 2
