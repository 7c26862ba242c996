"""The agent with the real embedded default model: the LLM intent parser through the
transformers backend (JSON-schema constrained), and a 3-turn conversation ranked by a real
Recommender. SmolLM2-135M is not expected to extract well; what must hold is that whatever it
outputs, the agent stays within the catalogue, records which parser ran, and never crashes."""

from __future__ import annotations

import pytest

from llm_recommender import Recommender
from llm_recommender.agent import chat_turn
from llm_recommender.agent.llm_parser import LLMParser
from llm_recommender.protocol import RankRequest
from tests.agent_fixtures import tiny_catalogue

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rec(default_model_dir):
    return Recommender(backend="transformers")


def test_llm_parser_with_the_default_model(rec):
    cat = tiny_catalogue()
    intent = LLMParser(cat, rec.backend, max_tokens=96).parse("I loved Alien and Die Hard, no comedy please")
    assert intent.parser in ("llm", "deterministic")
    if intent.parser == "deterministic":  # the model's output failed validation: the note says so
        assert any("deterministic parser used" in n for n in intent.notes)
    assert all(m.item_id in cat for m in intent.mentions if m.item_id)


def test_three_turns_ranked_by_the_default_model(rec):
    cat = tiny_catalogue()

    def rank_fn(history, pool, k):
        return rec.rank_request(RankRequest(history=history, candidates=pool[:10], top_k=k, strategy="verbalizer"))

    messages = []
    kinds = []
    for text in ["I loved Alien and Die Hard, 3 movies", "more like the second one", "I've seen that"]:
        messages.append({"role": "user", "content": text})
        reply, answer = chat_turn(messages, cat, rank_fn)
        messages.append({"role": "assistant", "content": reply})
        kinds.append(answer.kind)
        shown = [it.id for it in answer.recommendation.items]
        assert len(shown) == 3 and all(i in cat for i in shown) and not {"1", "16"} & set(shown)
        assert answer.recommendation.backend == "transformers"
    assert kinds == ["recommendation"] * 3


@pytest.fixture(scope="module")
def sample_bundle(tmp_path_factory):
    from llm_recommender.bundle import FitConfig, fit_bundle

    cfg = FitConfig(dataset="ml-latest-small", components=["popularity", "cooccurrence"], valid_users=100, min_gain=-1.0)
    return fit_bundle(cfg, tmp_path_factory.mktemp("agent-real") / "bundle", log=lambda m: None)


def test_dialogues_with_the_default_model_and_a_bundle_on_the_sample(sample_bundle, default_model_dir):
    """A few committed dialogues: the LLM intent parser (real SmolLM2, JSON-schema constrained) and the
    bundle's ranking with reasons the LLM phrases from the evidence (or the evidence text, recorded)."""
    from pathlib import Path

    from llm_recommender.agent import CatalogueIndex
    from llm_recommender.agent.scoring import load_dialogues, run_dialogues

    rec = Recommender.load(sample_bundle, backend="transformers")
    cat = CatalogueIndex.from_bundle(rec.bundle)
    seen: list = []

    def rank_fn(history, pool, k):
        resp = rec.rank_pool(history, pool, k, reasons="llm")
        seen.append(resp)
        return resp

    path = Path(__file__).resolve().parents[2] / "eval" / "dialogues" / "dialogues.jsonl"
    dialogues = [d for d in load_dialogues(path) if d["id"] in {"hated-and-genre", "typo-godfather"}]
    assert len(dialogues) >= 2
    out = run_dialogues(dialogues, cat, rank_fn, parser="llm", backend=rec.backend)
    m = out["metrics"]
    assert out["counts"]["recommended"] > 0
    assert m["recommended_in_catalogue"] == 1.0 and m["recommended_never_mentioned_or_seen"] == 1.0
    for resp in seen:  # every reason is there: the LLM's, or the evidence text with the rejection recorded
        assert all(it.reason and it.evidence for it in resp.items)
        rejected = sum(f.reason.count(": ") for f in resp.fallbacks if f.stage == "reason")
        assert rejected <= len(resp.items) and resp.backend == "transformers"
