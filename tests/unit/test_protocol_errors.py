"""Bad input: every problem is a typed error naming the field, never a traceback or a silent answer."""

from __future__ import annotations

import pytest

from llm_recommender import InvalidRequestError, Recommender, TooManyCandidatesError, UnknownNameError
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.errors import RecommenderError
from llm_recommender.protocol import MAX_TITLE_CHARS, Item, RankRequest, parse_request


@pytest.fixture
def rec():
    return Recommender(backend=FakeBackend())


def _err(fn, *args, **kwargs) -> RecommenderError:
    with pytest.raises(RecommenderError) as info:
        fn(*args, **kwargs)
    return info.value


def test_empty_candidates(rec):
    err = _err(rec.rank, history=[], candidates=[])
    assert isinstance(err, InvalidRequestError) and err.param == "candidates"
    assert parse_request({"candidates": []}).candidates == []  # valid: a bundle retrieves candidates
    err = _err(rec.rank_request, {"candidates": []})  # without a bundle: a typed error naming the field
    assert err.param == "candidates" and "bundle" in err.message


def test_duplicate_candidate_ids(rec):
    err = _err(rec.rank, candidates=[{"id": "a", "title": "A"}, {"id": "b", "title": "B"}, {"id": "a", "title": "C"}])
    assert err.param == "candidates[2].id" and "duplicate" in err.message and "candidates[0]" in err.message


def test_a_request_is_validated_once_when_built():
    # Building a RankRequest runs every check (the server's router builds it), so no later layer re-parses it.
    a, b = {"id": "a", "title": "A"}, {"id": "a", "title": "B"}
    err = _err(RankRequest, candidates=[a, b])
    assert isinstance(err, InvalidRequestError) and err.param == "candidates[1].id"
    unchecked = RankRequest.model_construct(candidates=[Item(**a), Item(**b)])
    assert parse_request(unchecked) is unchecked  # given a RankRequest, parse_request does no work


def test_int_ids_are_accepted_as_strings(rec):
    resp = rec.rank(candidates=[{"id": 1, "title": "A"}, {"id": 2, "title": "B"}])
    assert {i.id for i in resp.items} == {"1", "2"}


def test_more_candidates_than_labels(rec):
    cands = [{"id": str(i), "title": f"Movie {i}"} for i in range(27)]
    err = _err(rec.rank, candidates=cands, strategy="verbalizer")
    assert isinstance(err, TooManyCandidatesError) and err.param == "candidates" and "26" in err.message
    # pointwise has no label limit
    assert len(rec.rank(candidates=cands, strategy="pointwise", top_k=27).items) == 27


@pytest.mark.parametrize(
    "cand, param",
    [
        ({"id": "a"}, "candidates[1].title"),
        ({"id": "a", "title": ""}, "candidates[1].title"),
        ({"id": "a", "title": "   "}, "candidates[1].title"),
        ({"title": "no id"}, "candidates[1].id"),
        ({"id": "a", "title": 5}, "candidates[1].title"),
        ({"id": "a", "title": "x", "colour": "red"}, "candidates[1].colour"),
        ({"id": "a", "title": b"\xff\xfe bad bytes"}, "candidates[1].title"),
        ({"id": "a", "title": "lone surrogate \udcff"}, "candidates[1].title"),
        ({"id": "a", "title": "x" * (MAX_TITLE_CHARS + 1)}, "candidates[1].title"),
    ],
)
def test_bad_candidate_fields_name_the_field(rec, cand, param):
    err = _err(rec.rank, candidates=[{"id": "ok", "title": "fine"}, cand])
    assert isinstance(err, InvalidRequestError)
    assert err.param == param, err.message


def test_bad_history_field_named(rec):
    err = _err(rec.rank, history=[{"id": "h", "title": "ok"}, {"id": "h2", "title": "x", "rating": "five"}],
               candidates=[{"id": "a", "title": "A"}])
    assert err.param == "history[1].rating"


def test_non_list_inputs(rec):
    assert _err(rec.rank, candidates="abc").param == "candidates"
    assert _err(parse_request, ["not", "an", "object"]).param is None


def test_top_k_bounds():
    assert _err(parse_request, {"candidates": [{"id": "a", "title": "A"}], "top_k": 0}).param == "top_k"


def test_unknown_strategy_lists_valid_names(rec):
    err = _err(rec.rank, candidates=[{"id": "a", "title": "A"}], strategy="magic")
    assert isinstance(err, UnknownNameError) and err.param == "strategy"
    for name in ("listwise", "pointwise", "verbalizer"):
        assert name in err.message


def test_unknown_backend_lists_valid_names():
    err = _err(Recommender, backend="nope")
    assert isinstance(err, UnknownNameError) and "transformers" in err.message and err.param == "backend"


def test_unknown_default_strategy_fails_at_construction():
    err = _err(Recommender, backend=FakeBackend(), strategy="nope")
    assert isinstance(err, UnknownNameError)


def test_bad_setting_is_typed():
    err = _err(Recommender, backend=FakeBackend(), permutations=0)  # the flat name; the error names its section
    assert isinstance(err, InvalidRequestError) and err.param == "verbalizer.permutations"


def test_long_text_is_truncated_with_a_note(rec):
    long_title = "A very long title " * 50  # 900 chars: accepted, but capped in the prompt
    resp = rec.rank(candidates=[{"id": "a", "title": long_title}, {"id": "b", "title": "B"}])
    assert any("truncated" in n for n in resp.notes)
    prompt = rec.backend.calls[-1][1][0]
    assert long_title.strip() not in prompt


def test_error_to_openai_shape():
    err = InvalidRequestError("bad", param="candidates[0].id")
    body = err.to_dict()["error"]
    assert body == {"message": "bad", "type": "invalid_request_error", "param": "candidates[0].id", "code": "invalid_request"}
    assert err.status_code == 400


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_rejected_in_python(rec, value):
    err = _err(rec.rank, history=[{"id": "h", "title": "H", "rating": value}], candidates=[{"id": "a", "title": "A"}])
    assert isinstance(err, InvalidRequestError) and err.param == "history[0].rating"
    err = _err(parse_request, {"candidates": [{"id": "a", "title": "A", "attributes": {"score": value}}]})
    assert err.param == "candidates[0].attributes" and "'score' must be a finite number" in err.message
    err = _err(parse_request, {"history": [{"id": "h", "title": "H", "timestamp": value}], "candidates": [{"id": "a", "title": "A"}]})
    assert err.param == "history[0].timestamp"


@pytest.mark.parametrize("strategy", ["verbalizer", "pointwise", "listwise"])
def test_truncation_notes_belong_to_the_request_that_was_truncated(rec, strategy):
    short = {"candidates": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}], "strategy": strategy}
    long = {"candidates": [{"id": "a", "title": "A"}, {"id": "b", "title": "B " * (MAX_TITLE_CHARS // 2)}],
            "history": [{"id": "h", "title": "H " * (MAX_TITLE_CHARS // 2)}], "strategy": strategy}
    first, second, third = rec.rank_many([short, long, short])
    assert not any("truncated" in n for n in first.notes + third.notes)
    assert [n for n in second.notes if "were truncated" in n] == [
        "2 item text(s) were longer than the prompt limits and were truncated"
    ]
    again = rec.rank_many([long])[0]  # no counter left over from the last call, none double-counted
    assert again.notes == second.notes
