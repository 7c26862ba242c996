"""Parsing model output: valid, invalid and adversarial JSON."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_recommender.structured import ParseFailure, parse_ranking, parse_reason, ranking_schema, reason_schema

IDS = ["10", "11", "12"]


def test_valid_ranking():
    assert parse_ranking('{"ranking": ["12", "10", "11"]}', IDS) == ["12", "10", "11"]


def test_ranking_inside_prose_and_fences():
    text = 'Sure! Here it is:\n```json\n{"ranking": ["11", "12", "10"]}\n```'
    assert parse_ranking(text, IDS) == ["11", "12", "10"]


@pytest.mark.parametrize(
    "text, kind",
    [
        ("not json at all", "not_json"),
        ('{"ranking": ["10", "11"', "not_json"),
        ("[1, 2, 3]", "schema"),
        ('{"ranking": "10,11,12"}', "schema"),
        ('{"ranking": [10, 11, 12]}', "schema"),
        ('{"ranking": ["10", "11", "12"], "extra": 1}', "schema"),
        ('{"order": ["10", "11", "12"]}', "schema"),
        ('{"ranking": ["10", "11", "99"]}', "unknown_id"),
        ('{"ranking": ["10", "10", "11"]}', "duplicate_id"),
        ('{"ranking": ["10", "11"]}', "missing_id"),
        ('{"ranking": ["10", "11", "12", "12"]}', "duplicate_id"),
    ],
)
def test_invalid_rankings(text, kind):
    with pytest.raises(ParseFailure) as info:
        parse_ranking(text, IDS)
    assert info.value.kind == kind
    assert info.value.message  # worded for the re-ask


def test_adversarial_nested_and_huge():
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ParseFailure):
        parse_ranking(deep, IDS)
    with pytest.raises(ParseFailure):
        parse_ranking('{"ranking": ["' + "x" * 100000 + '"]}', IDS)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_never_crashes(text):
    try:
        out = parse_ranking(text, IDS)
    except ParseFailure:
        return
    assert sorted(out) == sorted(IDS)


def test_ranking_schema_constrains_ids_and_length():
    schema = ranking_schema(IDS)
    prop = schema["properties"]["ranking"]
    assert prop["minItems"] == prop["maxItems"] == 3
    assert prop["items"]["enum"] == IDS
    assert schema["additionalProperties"] is False


def test_reason_parse_and_salvage():
    assert parse_reason('{"reason": "Because you liked Heat."}', 100) == "Because you liked Heat."
    assert parse_reason('{"reason": "Because you liked Heat and Casino', 100) == "Because you liked Heat and Casino"
    assert parse_reason('{"reason": "' + "word " * 100 + '"}', 40).endswith("…")
    assert len(parse_reason('{"reason": "' + "word " * 100 + '"}', 40)) == 40
    for bad in ("nothing", '{"reason": 5}', '{"reason": ""}'):
        with pytest.raises(ParseFailure):
            parse_reason(bad, 100)
    assert reason_schema(50)["properties"]["reason"]["maxLength"] == 50


def test_grounded_reason_schema_and_parse():
    titles = ["Heat (1995)", "Casino (1995)"]
    schema = reason_schema(80, titles)
    assert schema["required"] == ["similar_to", "reason"]
    text = '{"similar_to": "Heat (1995)", "reason": "Another tense crime drama."}'
    assert parse_reason(text, 80, titles) == "Like Heat (1995): Another tense crime drama."
    # an unknown title is dropped rather than shown; a title already in the text is not repeated
    assert parse_reason('{"similar_to": "Made Up", "reason": "Fun."}', 80, titles) == "Fun."
    assert parse_reason('{"similar_to": "Heat (1995)", "reason": "As Heat (1995) did."}', 80, titles) == "As Heat (1995) did."


def test_reason_salvage_stops_at_the_string_end():
    text = '{"reason": "Tense and \\"gritty\\" like Heat.", "similar_to": "Independence Day (a.k.a. ID4) (199'
    assert parse_reason(text, 200) == 'Tense and "gritty" like Heat.'
