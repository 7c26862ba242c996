"""Issue 26: a reason states only what is true. Each test here is one case of the issue's "Why", measured on
main (no rating the user did not give, recency only where it is real, no dropped component, the dataset's
words, hedged low-P items, LLM reasons that stop costing when the filter rejects them, no empty reasons
without a bundle), and the reason audit's checks run on a small fitted bundle."""

from __future__ import annotations

import json

import pytest

from llm_recommender import Recommender
from llm_recommender.agent import CatalogueIndex, chat_turn
from llm_recommender.agent.dialogue import TurnPlan, history_of
from llm_recommender.agent.intent import Mention
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.bundle import FitConfig, fit_bundle
from llm_recommender.bundle.manifest import read_manifest
from llm_recommender.data import load_dataset
from llm_recommender.data.splits import llmrank_cases
from llm_recommender.data.words import MOVIE, PRODUCT
from llm_recommender.explain.audit import AuditCounts, audit_response, failures
from llm_recommender.explain.reasons import HEDGE, evidence_reasons
from llm_recommender.protocol import Evidence, EvidenceItem, HistoryEntry, Item
from tests.synthetic import hash_encoder, write_generic_dataset


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("honest")
    mp = pytest.MonkeyPatch()
    mp.setenv("LLM_REC_CACHE_DIR", str(root / "cache"))
    data = write_generic_dataset(root / "data")
    # min_gain 1.0: backward elimination drops every component but one, so the bundle holds dropped ones
    dropped = fit_bundle(FitConfig(dataset="generic", data_dir=data, components=["popularity", "cooccurrence", "embedding"],
                                   valid_users=20, min_gain=1.0, item_words="book"),
                         root / "dropped", text_encoder=hash_encoder, log=lambda m: None)
    kept_all = fit_bundle(FitConfig(dataset="generic", data_dir=data, components=["popularity", "cooccurrence", "embedding"],
                                    valid_users=20, min_gain=-1.0),
                          root / "all", text_encoder=hash_encoder, log=lambda m: None)
    cases = llmrank_cases(load_dataset("generic", data), split="test", n_users=12, n_candidates=10, seed=0)
    yield dropped, kept_all, cases
    mp.undo()


def _audit(bundle, cases, **update):
    rec = Recommender.load(bundle, text_encoder=hash_encoder)
    m = rec.bundle.manifest
    counts = AuditCounts()
    for c in cases:
        req = c.request.model_copy(update={"top_k": 8, "reasons": True, **update})
        audit_response(counts, req, rec.rank_request(req), kept=[x.name for x in m.kept()],
                       dropped=[x.name for x in m.components if not x.kept], noun=m.item_words.get("noun", "item"))
    return counts.summary()


# ---- no rating the user did not give ---------------------------------------------------------------

def test_a_like_stated_in_chat_carries_no_rating_and_is_said_as_stated():
    alien = Item(id="1214", title="Alien (1979)", attributes={"genres": ["Horror", "Sci-Fi"]})
    plan = TurnPlan(action="recommend", parser="deterministic", liked=[Mention(text="Alien", item_id="1214")])
    (entry,) = history_of(plan, CatalogueIndex([alien]))
    assert entry.rating is None and entry.stated  # main: rating=5.0
    cited = EvidenceItem(id="1214", title=entry.title, component="cooccurrence", strength=3.0, rating=entry.rating,
                         stated=entry.stated)
    ev = Evidence(contributions={"cooccurrence": 1.0}, shares={"cooccurrence": 1.0}, history_items=[cited])
    (reason,) = evidence_reasons([Item(id="2", title="Aliens (1986)")], [ev], words=MOVIE, history=[entry])
    assert "you said you liked Alien (1979)" in reason and "★" not in reason and "rated" not in reason


def test_chat_turns_through_the_agent_invent_no_rating(fitted):
    _, bundle, _ = fitted
    rec = Recommender.load(bundle, text_encoder=hash_encoder)
    catalogue = CatalogueIndex.from_bundle(rec.bundle)
    histories = []

    def rank_fn(history, pool, k):
        histories.append(history)
        return rec.rank_pool(history, pool, k, reasons=True)

    _, answer = chat_turn([{"role": "user", "content": "I loved Item 4 and Item 8"}], catalogue, rank_fn)
    assert answer.recommendation is not None and histories
    assert all(h.rating is None and h.stated for h in histories[-1])
    assert all("★" not in (it.reason or "") and "rated" not in (it.reason or "") for it in answer.recommendation.items)


# ---- the recency phrase only where the sequence model's evidence is real; low P is hedged -----------

def _history(stated=False):
    return [HistoryEntry(id=f"h{k}", title=f"Film {k}", timestamp=k, stated=stated) for k in range(3)]


def test_recency_is_claimed_only_when_the_sequence_term_carries_the_item():
    items = [Item(id="a", title="Friday the 13th (1980)"), Item(id="b", title="Heat (1995)"), Item(id="c", title="Babe (1995)")]
    weak = Evidence(contributions={"sequence": 0.05, "als": 0.02})  # largest, but not clearly positive (main: recency)
    second = Evidence(contributions={"als": 1.2, "sequence": 0.9})  # positive, not the largest
    strong = Evidence(contributions={"sequence": 1.5, "als": 0.2})
    reasons = evidence_reasons(items, [weak, second, strong], words=MOVIE, history=_history(), probabilities=[0.3, 0.3, 0.3])
    assert "most recently" not in reasons[0] and "most recently" not in reasons[1]
    assert "taste your history shows" in reasons[1]
    assert "follows on from what you watched most recently" in reasons[2]
    # likes stated in chat are no viewing order: no recency, however large the term
    chat = evidence_reasons(items[2:], [strong], words=MOVIE, history=_history(stated=True), probabilities=[0.3])
    assert "most recently" not in chat[0]


def test_a_low_probability_item_gets_a_hedged_reason_and_reasons_differ():
    items = [Item(id=f"x{k}", title=f"Film X{k} (1990)") for k in range(4)]
    ev = Evidence(contributions={"sequence": 1.5})
    reasons = evidence_reasons(items, [ev] * 4, words=MOVIE, history=_history(), probabilities=[0.5, 0.4, 0.04, 0.006])
    assert not reasons[0].startswith(HEDGE) and not reasons[1].startswith(HEDGE)
    assert reasons[2].startswith(HEDGE + ":") and reasons[3].startswith(HEDGE + ":")  # P=0.006 (main: confident)
    assert len(set(reasons)) == 4


# ---- no component the fusion dropped; the dataset's words --------------------------------------------

def test_a_dropped_component_is_neither_cited_nor_named(fitted):
    dropped, _, cases = fitted
    manifest = read_manifest(dropped)
    gone = {c.name for c in manifest.components if not c.kept}
    assert gone  # the fit dropped some
    rec = Recommender.load(dropped, text_encoder=hash_encoder)
    for c in cases:
        resp = rec.rank_request(c.request.model_copy(update={"top_k": 5, "reasons": True}))
        for it in resp.items:
            assert not gone & set(it.evidence.contributions)
            assert not gone & {e.component for e in it.evidence.history_items}  # main: cooccurrence cited anyway


def test_the_bundle_records_its_words_and_reasons_use_them(fitted):
    dropped, kept_all, cases = fitted
    assert read_manifest(dropped).item_words["verb"] == "read"
    assert read_manifest(kept_all).item_words["noun"] == "item"  # generic without --item-words: neutral
    for bundle in (dropped, kept_all):
        rec = Recommender.load(bundle, text_encoder=hash_encoder)
        for c in cases[:4]:
            resp = rec.rank_request(c.request.model_copy(update={"top_k": 5, "reasons": True}))
            assert not any(w in (it.reason or "").lower() for it in resp.items for w in ("watched", "viewers"))


def test_loaders_record_their_words():
    from llm_recommender.data import dataset_names
    from llm_recommender.data.base import LOADER_WORDS
    from llm_recommender.data.words import NEUTRAL

    dataset_names()  # registers the loaders
    assert LOADER_WORDS["ml-100k"] == MOVIE and LOADER_WORDS["amazon-beauty"] == PRODUCT
    assert LOADER_WORDS["generic"] == NEUTRAL


def test_a_bundle_without_recorded_words_uses_neutral_ones(fitted):
    _, kept_all, cases = fitted
    rec = Recommender.load(kept_all, text_encoder=hash_encoder)
    rec.bundle.manifest.item_words = {}  # as bundle.json files written before the field existed
    resp = rec.rank_request(cases[0].request.model_copy(update={"top_k": 5, "reasons": True}))
    assert all("watched" not in (it.reason or "") for it in resp.items)


# ---- LLM reasons: stop paying for replies the filter throws away ------------------------------------

def test_llm_reasons_stop_generating_when_the_filter_rejects_them(fitted):
    _, bundle, cases = fitted
    backend = FakeBackend(generations=lambda p, s: json.dumps({"reason": "The user may like the recommended item."}))
    rec = Recommender.load(bundle, text_encoder=hash_encoder, backend=backend)
    responses = [rec.rank_request(c.request.model_copy(update={"top_k": 5, "reasons": "llm"})) for c in cases[:3]]
    generated = sum(len(args[0]) for name, args in backend.calls if name == "generate")
    assert generated == 3  # the probe only (main: 15, every one rejected)
    assert all(it.reason for r in responses for it in r.items)  # the evidence text instead
    later = responses[1:]
    assert all(any("LLM reasons are off" in n for n in r.notes) for r in later)
    assert all(r.usage.completion_tokens == 0 for r in later)


def test_llm_reasons_that_pass_the_filter_keep_being_generated(fitted):
    _, bundle, cases = fitted

    def gen(prompt, schema):
        because = (schema or {}).get("properties", {}).get("because", {}).get("enum", [""])[0]
        return json.dumps({"because": because, "reason": f"You liked {because}, and its fans often pick this one next."})

    backend = FakeBackend(generations=gen)
    rec = Recommender.load(bundle, text_encoder=hash_encoder, backend=backend)
    for c in cases[:2]:
        rec.rank_request(c.request.model_copy(update={"top_k": 3, "reasons": "llm"}))
    assert not rec.reason_gate().off


# ---- without a bundle: the request's own evidence, never an empty reason ------------------------------

def test_zero_shot_reasons_are_never_empty_and_cite_what_the_request_shows():
    history = [{"id": "1", "title": "Toy Story (1995)", "attributes": {"genres": ["Animation", "Comedy"]}, "rating": 5},
               {"id": "2", "title": "Heat (1995)", "attributes": {"genres": ["Crime", "Thriller"]}}]
    cands = [{"id": "3", "title": "Babe (1995)", "attributes": {"genres": ["Comedy", "Drama"]}},
             {"id": "4", "title": "Casino (1995)", "attributes": {"genres": ["Crime", "Drama"]}},
             {"id": "5", "title": "Nixon (1995)", "attributes": {"genres": ["Drama"]}}]
    backend = FakeBackend(generations=lambda p, s: "garbage")  # every LLM reason is rejected
    rec = Recommender(backend=backend)
    resp = rec.rank(history=history, candidates=cands, top_k=3, reasons=True)
    by_id = {it.id: it.reason for it in resp.items}
    assert all(by_id.values())  # main: all None
    assert "comedy with Toy Story (1995), which you rated 5★" in by_id["3"]
    assert "crime with Heat (1995)" in by_id["4"]
    assert "no more specific reason" in by_id["5"]
    again = rec.rank(history=history, candidates=cands, top_k=3, reasons="evidence")  # main: an error
    assert all(it.reason for it in again.items)


# ---- the audit, on a small fitted bundle ----------------------------------------------------------------

@pytest.mark.parametrize("which", [0, 1])
def test_the_reason_audit_passes_on_a_small_bundle(fitted, which):
    bundle, cases = fitted[which], fitted[2]
    summary = _audit(bundle, cases)
    assert summary["reasons"] == 8 * len(cases) and summary["empty_reasons"] == 0
    assert failures(summary) == [], summary


def test_the_gate_verdict_survives_the_process(tmp_path):
    """`llm-rec rank` is one process per call: the measured verdict is kept, so the next call does not pay again."""
    from llm_recommender.explain.gate import ReasonGate

    gate = ReasonGate(tmp_path / "gate.json")
    for _ in range(3):
        gate.record(True)
    assert gate.off
    again = ReasonGate(tmp_path / "gate.json")
    assert again.off and again.asked == 3 and again.rejected == 3
    (tmp_path / "bad.json").write_text("{not json")
    assert not ReasonGate(tmp_path / "bad.json").off  # an unreadable verdict is measured again


def test_an_llm_reason_may_not_say_a_stated_like_was_consumed(fitted):
    _, bundle, cases = fitted

    def gen(prompt, schema):
        because = (schema or {}).get("properties", {}).get("because", {}).get("enum", [""])[0]
        return json.dumps({"because": because, "reason": f"You loved {because}, and then you bought this one."})

    rec = Recommender.load(bundle, text_encoder=hash_encoder, backend=FakeBackend(generations=gen))
    req = cases[0].request
    stated = [h.model_copy(update={"rating": None, "stated": True}) for h in req.history]
    resp = rec.rank_request(req.model_copy(update={"history": stated, "top_k": 3, "reasons": "llm"}))
    cited = [it for it in resp.items if it.evidence.history_items]
    assert cited and all("bought" not in (it.reason or "") for it in cited)
    assert "only said they liked" in resp.fallbacks[0].reason
