"""CatalogueIndex: title normalisation and fuzzy linking robust to typos, years, articles, case."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender.agent import CatalogueIndex, normalize
from llm_recommender.agent.catalogue import item_year, title_keys
from tests.agent_fixtures import tiny_catalogue, tiny_items


@pytest.mark.parametrize("raw, key", [
    ("Godfather, The (1972)", "godfather"),
    ("The Godfather", "godfather"),
    ("  the GODFATHER  ", "godfather"),
    ("Amélie", "amelie"),
    ("Dumb & Dumber", "dumb and dumber"),
    ("Godfather: Part II, The (1974)", "godfather part 2"),
])
def test_normalize(raw, key):
    assert normalize(raw) == key


def test_title_keys_index_alternative_titles():
    assert title_keys("Seven (a.k.a. Se7en) (1995)") == ["seven", "se7en"]
    assert title_keys("Heat, The (2013)") == ["the heat"]


def test_item_year_from_title_or_attribute():
    items = tiny_items()
    assert item_year(items[0]) == 1979
    assert item_year(items[0].model_copy(update={"title": "Alien", "attributes": {"year": 2001}})) == 2001


@pytest.mark.parametrize("mention, item_id", [
    ("Godfahter", "5"), ("the godfather", "5"), ("GODFATHER", "5"), ("godfather part 2", "6"),
    ("Toy Stroy", "7"), ("toy story 2", "8"), ("Se7en", "11"), ("Sense & Sensibility", "17"),
    ("back to the futur", "18"), ("Blade Runer (1982)", "15"), ("Alien", "1"), ("aliens", "2"),
])
def test_search_links_typos_missing_years_articles(mention, item_id):
    matches = tiny_catalogue().search(mention)
    assert matches[0].item.id == item_id, [(m.item.title, m.score) for m in matches]


def test_article_decides_between_heat_and_the_heat():
    cat = tiny_catalogue()
    assert cat.search("Heat")[0].item.id == "3" and cat.search("Heat")[0].exact == 2
    assert cat.search("The Heat")[0].item.id == "4"


def test_identical_titles_tie_and_a_year_breaks_the_tie():
    cat = tiny_catalogue()
    top2 = cat.search("Hamlet")[:2]
    assert {m.item.id for m in top2} == {"9", "10"} and top2[0].exact == top2[1].exact == 2
    assert cat.search("Hamlet", year=1996)[0].item.id == "10"


def test_a_short_title_inside_a_longer_mention_is_not_a_match():
    # "Go" must not win "Godfahter": partial matching only runs when the mention is the shorter one.
    cat = CatalogueIndex([*tiny_items(), tiny_items()[0].model_copy(update={"id": "99", "title": "Go (1999)"})])
    assert cat.search("Godfahter")[0].item.id == "5"


def test_nothing_close_returns_nothing():
    assert tiny_catalogue().search("zzzz qqqq xxxx") == []


def test_embedding_hook_catches_what_fuzzy_matching_misses():
    def embed(texts):  # a two-concept "embedding": space films and mafia films
        rows = [[float("alien" in t.lower() or "space" in t.lower()), float("godfather" in t.lower() or "mafia" in t.lower())]
                for t in texts]
        return np.asarray(rows) + 1e-3

    cat = CatalogueIndex(tiny_items(), embed=embed)
    assert cat.search("mafia saga qqq")[0].item.id in {"5", "6"}
    assert tiny_catalogue().search("mafia saga qqq") == []
