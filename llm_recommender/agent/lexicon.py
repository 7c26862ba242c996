"""Words the deterministic parser knows: polarity cues, genre synonyms, numbers, ordinals."""

from __future__ import annotations

import re

# Longest first inside each group, and dislike before like ("didn't like" contains "like").
_DISLIKED = (
    r"didn'?t (?:really )?(?:like|enjoy|love)|did not (?:like|enjoy)|don'?t (?:really )?like|do not like|"
    r"can'?t stand|couldn'?t stand|not a (?:big )?fan of|not into|no fan of|hated|hate|disliked|dislike|"
    r"was (?:boring|terrible|awful)|bored me|despised|detested|loathed"
)
_UNSEEN = r"haven'?t (?:yet )?(?:seen|watched)|have not (?:seen|watched)|never (?:seen|watched|saw)|not seen"
_SEEN = (
    r"(?:i'?ve |i have |we'?ve |already |have )*(?:seen|watched|saw)(?: already)?|"
    r"(?:i )?already know"
)
_LIKED = (
    r"loved|love|adored|adore|liked|like|enjoyed|enjoy|really dug|big fan of|fan of|into|"
    r"favou?rites? (?:are|is|were|was|include)|favou?rites?|similar to|such as|in the vein of|"
    r"along the lines of|same vibe as|reminds? me of|was (?:great|amazing|awesome|fantastic)"
)
CUES = re.compile(
    rf"\b(?:(?P<disliked>{_DISLIKED})|(?P<unseen>{_UNSEEN})|(?P<seen>{_SEEN})|(?P<liked>{_LIKED}))\b",
    re.IGNORECASE,
)

# Catalogue genre (MovieLens names) -> words users type for it.
GENRE_WORDS: dict[str, list[str]] = {
    "Action": ["action", "action-packed"],
    "Adventure": ["adventure", "adventures", "adventurous"],
    "Animation": ["animation", "animated", "cartoon", "cartoons", "anime"],
    "Children": ["children", "children's", "kids", "kid", "family", "family-friendly"],
    "Comedy": ["comedy", "comedies", "funny", "hilarious", "comedic", "rom-com", "romcom"],
    "Crime": ["crime", "gangster", "heist", "mafia"],
    "Documentary": ["documentary", "documentaries", "docs"],
    "Drama": ["drama", "dramas", "dramatic"],
    "Fantasy": ["fantasy", "fantasies"],
    "Film-Noir": ["film-noir", "film noir", "noir"],
    "Horror": ["horror", "horrors", "scary", "slasher", "slashers"],
    "IMAX": ["imax"],
    "Musical": ["musical", "musicals"],
    "Mystery": ["mystery", "mysteries", "whodunit", "whodunnit"],
    "Romance": ["romance", "romantic", "romances", "love story", "love stories", "rom-com", "romcom"],
    "Sci-Fi": ["sci-fi", "scifi", "sci fi", "science fiction", "science-fiction", "sf"],
    "Thriller": ["thriller", "thrillers", "suspense", "suspenseful"],
    "War": ["war", "wartime"],
    "Western": ["western", "westerns", "cowboy", "cowboys"],
}

NEGATION = re.compile(
    r"\b(?:not|no|without|except|avoid|nothing|non|never|none|skip|hate|hates|dislike|exclude|excluding|less)\b|n't\b",
    re.IGNORECASE,
)
# A negation does not reach past these ("no horror, but a comedy").
NEGATION_BREAK = re.compile(r"[.;!?]|\bbut\b|\bjust\b|\binstead\b|\brather\b", re.IGNORECASE)

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a couple": 2, "a pair of": 2, "a few": 3,
    "a handful of": 5, "several": 5,
}
ORDINALS = {
    "first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5,
    "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8, "ninth": 9, "9th": 9,
    "tenth": 10, "10th": 10, "last": -1, "top": 1,
}
DECADE_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                "eighties": 80, "nineties": 90}

# Words that say "the user wants recommendations" even without a title or constraint.
REQUEST = re.compile(
    r"\b(?:recommend\w*|suggest\w*|movies?|films?|watch\w*|something|anything|more|another|others?|else|similar|"
    r"picks?|ideas?|options?|show me|what should|next)\b",
    re.IGNORECASE,
)
