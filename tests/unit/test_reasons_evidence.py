"""Reasons from the fitted bundle's evidence: consistent with the fusion, grounded, distinct, honest for a
cold item; ``reasons="llm"`` phrases the same evidence and falls back to it when the phrasing is degenerate."""

from __future__ import annotations

import json

import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.bundle import FitConfig, fit_bundle
from llm_recommender.data import load_dataset
from llm_recommender.data.splits import llmrank_cases
from llm_recommender.data.words import MOVIE
from llm_recommender.explain.degenerate import problem
from llm_recommender.explain.reasons import lead_of, ordered_history
from llm_recommender.protocol import Item
from tests.synthetic import hash_encoder, write_generic_dataset

COMPONENTS = ["popularity", "cooccurrence", "embedding"]
PHRASES = {"cooccurrence": "often watched", "embedding": "described", "popularity": "widely watched"}
GENRES = ["Drama", "Comedy", "Action", "Horror"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("reasons")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLM_REC_CACHE_DIR", str(root / "cache"))
    data = write_generic_dataset(root / "data")
    cfg = FitConfig(dataset="generic", data_dir=data, components=COMPONENTS, valid_users=20, min_gain=-1.0,
                    item_words="movie")
    bundle = fit_bundle(cfg, root / "bundle", text_encoder=hash_encoder, log=lambda m: None)
    cases = llmrank_cases(load_dataset("generic", data), split="test", n_users=8, n_candidates=10, seed=0)
    yield bundle, cases
    mp.undo()


def rec_with(bundle, **kw):
    return Recommender.load(bundle, text_encoder=hash_encoder, **kw)


def test_evidence_decomposes_the_fused_logit_and_the_reason_names_its_largest_term(setup):
    bundle, cases = setup
    rec = rec_with(bundle)
    bias = float(rec.bundle.fusion.model.bias)
    checked = 0
    for c in cases:
        resp = rec.rank_request(c.request.model_copy(update={"top_k": 3, "reasons": "evidence"}))
        for it in resp.items:
            terms = it.evidence.contributions
            assert sum(terms.values()) + bias == pytest.approx(it.score, abs=2e-3)  # the terms ARE the fusion
            top = lead_of(it.evidence, ordered_history(c.request.history))  # the largest term, if clearly positive
            cited = it.evidence.history_items
            if top in PHRASES and (not cited or top in ("cooccurrence", "embedding") or cited[0].component == top):
                assert PHRASES[top] in it.reason, (top, it.reason)
                checked += 1
    assert checked > 0


def test_evidence_reasons_are_grounded_distinct_and_never_a_bare_title(setup):
    bundle, cases = setup
    rec = rec_with(bundle)
    for c in cases:
        req = c.request.model_copy(update={"top_k": 5, "reasons": "evidence"})
        resp = rec.rank_request(req)
        reasons = [it.reason for it in resp.items]
        assert len(set(reasons)) >= 0.8 * len(reasons)
        for it in resp.items:
            cand = next(x for x in req.candidates if x.id == it.id)
            allowed = [e.title for e in it.evidence.history_items]
            assert problem(it.reason, titles=[h.title for h in req.history], allowed_titles=allowed,
                           item_genres=cand.attributes["genres"], known_genres=GENRES,
                           ratings=[e.rating for e in it.evidence.history_items if e.rating]) is None, it.reason


def test_a_cold_item_gets_an_honest_reason(setup):
    bundle, cases = setup
    rec = rec_with(bundle)
    req = cases[0].request
    cold = Item(id="new-1", title="Zzyzx Unheard Of", attributes={"genres": ["Western"]})
    resp = rec.rank_request(req.model_copy(update={"candidates": [cold, *req.candidates[:3]], "top_k": 4,
                                                   "reasons": "evidence"}))
    item = next(it for it in resp.items if it.id == "new-1")
    assert item.evidence.known_item is False
    assert item.reason.startswith("New to the catalogue, so judged by its description")
    cited = {e.title for e in item.evidence.history_items}
    for h in req.history:  # names nothing the evidence does not hold
        assert h.title not in item.reason or h.title in cited
    assert "western" not in item.reason.lower() or "Western" in item.evidence.shared_attributes.get("genres", [])


# ---- reasons="llm": the LLM phrases the evidence; the filter keeps out what the issue found on main ----

BAD = [
    "The user may like the recommended item more than the item most similar to it.",
    "Like Independence Day (a.k.a. ID4) (1996): The user may like the recommended item most similar to the "
    "recommended item is",
    "It is a classic example of a classic horror movie.",  # about a comedy
    "The Godfather (1972)",
]


@pytest.mark.parametrize("text", BAD)
def test_the_degenerate_examples_from_main_are_rejected(text):
    assert problem(text, titles=["The Godfather (1972)", "Independence Day (a.k.a. ID4) (1996)"],
                   item_genres=["Comedy"], known_genres=["Comedy", "Horror", "Crime"]) is not None


@pytest.mark.parametrize(("text", "why"), [
    ("You gave Heat 5 stars, and people who watched Fargo (1996) often pick this one.", "not in the evidence"),
    ("You gave Heat (1995) 2 stars, and its fans often pick this one next.", "rating"),
    ("You gave Heat 5 stars, and this tense horror fits your taste.", "genre"),
    ("You gave Heat 5 stars, and its fans often pick this one next. It is great.", "more than one sentence"),
    ("You gave Hea 5 stars, and its fans often pick this one next.", "does not name"),
    ("You gave Heat 5 stars, and its fans often pick this", "cut off"),
])
def test_the_filter_names_each_kind_of_defect(text, why):
    got = problem(text, titles=["Heat (1995)", "Fargo (1996)"], allowed_titles=["Heat (1995)"], item_genres=["Crime"],
                  known_genres=["Crime", "Horror"], must_name="Heat (1995)", ratings=[5.0])
    assert got is not None and why in got, got


def test_a_good_phrasing_passes():
    assert problem("You gave Heat 5 stars, and its fans often pick this crime film next.", titles=["Heat (1995)"],
                   allowed_titles=["Heat (1995)"], item_genres=["Crime"], known_genres=["Crime", "Horror"],
                   must_name="Heat (1995)", ratings=[5.0]) is None


def _llm_rec(bundle, reply):
    def gen(prompt, schema):
        because = (schema or {}).get("properties", {}).get("because", {}).get("enum", [""])[0]
        return json.dumps({"because": because, "reason": reply(because)})

    return rec_with(bundle, backend=FakeBackend(generations=gen))


def test_llm_reasons_phrase_the_evidence_and_keep_good_replies(setup):
    bundle, cases = setup
    rec = _llm_rec(bundle, lambda t: f"You watched {t.rsplit(' (', 1)[0]}, and its fans often pick this one next.")
    req = cases[0].request.model_copy(update={"top_k": 3, "reasons": "llm"})
    resp = rec.rank_request(req)
    prompts = [args[0][0] for name, args in rec.backend.calls if name == "generate"]
    assert len(prompts) == 3
    for it, prompt in zip(resp.items, prompts):
        assert it.evidence is not None
        assert all(e.title in prompt for e in it.evidence.history_items[:1])  # the evidence is what it phrases
        if it.evidence.history_items:
            assert it.reason.startswith("You watched ")
    plain = rec.rank_request(req.model_copy(update={"reasons": False}))
    assert [i.id for i in resp.items] == [i.id for i in plain.items]  # reasons never change the ranking


@pytest.mark.parametrize("reply", BAD)
def test_degenerate_llm_reasons_fall_back_to_the_evidence_text_and_say_so(setup, reply):
    bundle, cases = setup
    req = cases[0].request.model_copy(update={"top_k": 3})
    rec = _llm_rec(bundle, lambda t: reply)
    resp = rec.rank_request(req.model_copy(update={"reasons": "llm"}))
    evidence_text = rec_with(bundle).rank_request(req.model_copy(update={"reasons": "evidence"}))
    assert [i.reason for i in resp.items] == [i.reason for i in evidence_text.items]
    assert resp.fallback_used and resp.fallbacks[0].stage == "reason" and resp.fallbacks[0].used == "evidence"


def test_citing_the_same_history_item_again_names_the_item_so_reasons_differ():
    from llm_recommender.explain.reasons import evidence_reasons
    from llm_recommender.protocol import Evidence, EvidenceItem

    cited = EvidenceItem(id="h1", title="Godfather, The (1972)", component="cooccurrence", strength=9.0, rating=5.0)
    ev = Evidence(contributions={"cooccurrence": 1.0}, shares={"cooccurrence": 1.0}, history_items=[cited])
    items = [Item(id="a", title="Godfather: Part II, The (1974)"), Item(id="b", title="American History X (1998)")]
    first, second = evidence_reasons(items, [ev, ev], words=MOVIE)
    assert "The Godfather (1972) 5★" in first and "often watched this too" in first
    assert "often watched American History X (1998) too" in second and first != second


class _AskedAgain:
    """A kept component whose ``explain`` recomputes its part of the score (the old evidence path)."""

    def __init__(self, links):
        self.links, self.asked = links, 0

    def explain(self, request, index):
        self.asked += 1
        rows = {hid: row[index] for hid, row in zip(self.links["history"], self.links["strength"])}
        found = sorted(((h.id, rows[h.id]) for h in request.history), key=lambda pair: -pair[1])  # request order on ties
        return {"cooccurring": [(hid, s) for hid, s in found[:6] if s > 0]}


def test_evidence_reads_what_scoring_kept_instead_of_asking_the_component_again():
    from types import SimpleNamespace

    from llm_recommender.explain import gather_evidence
    from llm_recommender.protocol import RankRequest
    from llm_recommender.scorers.base import ScoreResult

    request = RankRequest(history=[{"id": h, "title": f"H{h} (1990)", "rating": 5} for h in "abc"],
                          candidates=[{"id": c, "title": f"C{c} (1991)"} for c in "xy"])
    # rows in catalogue order, not the request's: ties must still be broken by the request's order
    links = {"key": "cooccurring", "history": ["c", "a", "b"], "strength": [[0.5, 0.0], [0.5, 0.2], [0.9, 0.0]]}
    component = _AskedAgain(links)
    bundle = SimpleNamespace(fusion=SimpleNamespace(components=["itemknn"]), components={"itemknn": component},
                             space=SimpleNamespace(index={}))
    details = {"contributions": {"itemknn": [1.0, 0.5]}}
    asked = gather_evidence(bundle, request, ScoreResult([1.0, 0.5], [0.7, 0.6], 3, details=details), [0, 1])
    assert component.asked == 2
    kept = ScoreResult([1.0, 0.5], [0.7, 0.6], 3, details={**details, "parts": {"itemknn": {"history_links": links}}})
    read = gather_evidence(bundle, request, kept, [0, 1])
    assert component.asked == 2  # not asked again
    assert [[e.id for e in ev.history_items] for ev in read] == [["b", "a", "c"], ["a"]]
    assert [ev.model_dump() for ev in read] == [ev.model_dump() for ev in asked]


def test_reason_sentences_render_in_the_one_sandboxed_environment_of_the_prompts(tmp_path):
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    from llm_recommender.explain.reasons import evidence_reason
    from llm_recommender.prompts import PromptConfig, PromptRenderer, template_environment
    from llm_recommender.protocol import Evidence

    (tmp_path / "reason_evidence.j2").write_text("Custom: {{ title }}.")
    renderer = PromptRenderer(FakeBackend(), PromptConfig(template_dir=tmp_path))
    env = template_environment(str(tmp_path))
    assert renderer.env is env and isinstance(env, SandboxedEnvironment) and env.undefined is StrictUndefined
    item = Item(id="1", title="Heat (1995)")
    assert evidence_reason(item, Evidence(), tmp_path) == "Custom: Heat (1995)."


def test_a_text_citation_needs_real_similarity(setup, monkeypatch):
    """'Described in much the same words' only where the cosine says so: a history item whose text is
    only loosely similar (below TEXT_CITATION_MIN) is never cited through the text component."""
    from llm_recommender.explain.evidence import TEXT_CITATION_MIN

    bundle, cases = setup
    rec = rec_with(bundle)
    request = cases[0].request.model_copy(update={"top_k": 3, "reasons": "evidence"})
    loose, close = request.history[0].id, request.history[1].id
    text = rec.bundle.components["embedding"]
    monkeypatch.setattr(text, "explain", lambda req, i: {"similar_text": [(loose, TEXT_CITATION_MIN - 0.2),
                                                                          (close, TEXT_CITATION_MIN + 0.1)]})
    for name, comp in rec.bundle.components.items():  # only the text component names history items here
        if name != "embedding":
            monkeypatch.setattr(comp, "explain", lambda req, i: {})
    monkeypatch.setattr("llm_recommender.explain.evidence.history_links", lambda result, component: None)
    cited = [e for it in rec.rank_request(request).items for e in it.evidence.history_items if e.component == "embedding"]
    assert cited and {e.id for e in cited} == {close}
