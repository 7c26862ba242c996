"""The words a dataset's items are spoken of with: "movie"/"watched", "product"/"bought", "book"/"read".

Each loader records its words (``register_loader(name, words=...)``); the fit writes them into the
bundle (``bundle.json``'s ``item_words``) so reasons say "people who bought it" on a products catalogue
and never "watched" or "viewers" there. A dataset, or an old bundle, without them gets the neutral words.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequestError


class ItemWords(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    noun: str = Field(default="item", description="what one item is: movie, product, book, item")
    plural: str = Field(default="items")
    verb: str = Field(default="interacted with", description="past tense of consuming one: watched, bought, read")
    people: str = Field(default="people", description="who consume them: viewers, buyers, readers, people")


NEUTRAL = ItemWords()
MOVIE = ItemWords(noun="movie", plural="movies", verb="watched", people="viewers")
PRODUCT = ItemWords(noun="product", plural="products", verb="bought", people="buyers")
BOOK = ItemWords(noun="book", plural="books", verb="read", people="readers")
KNOWN = {"movie": MOVIE, "product": PRODUCT, "book": BOOK, "item": NEUTRAL}


def parse_item_words(spec: str) -> ItemWords:
    """``movie`` | ``product`` | ``book`` | ``item``, or ``noun/verb`` (e.g. ``game/played``)."""
    spec = spec.strip()
    if spec.lower() in KNOWN:
        return KNOWN[spec.lower()]
    noun, sep, verb = spec.partition("/")
    noun, verb = noun.strip(), verb.strip()
    if not sep or not noun or not verb or len(spec) > 60:
        raise InvalidRequestError(
            f"item_words must be one of {', '.join(KNOWN)} or 'noun/verb' (e.g. 'game/played'), got {spec!r}",
            param="item_words")
    return ItemWords(noun=noun, plural=noun + "s", verb=verb, people="people")


def words_from(record: dict[str, str] | None) -> ItemWords:
    """The words a bundle recorded; neutral for a bundle fitted before they were recorded."""
    if not record:
        return NEUTRAL
    try:
        return ItemWords.model_validate(record)
    except ValueError:
        return NEUTRAL
