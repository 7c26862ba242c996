"""The deterministic parser: rules and fuzzy catalogue matching, no model call.

It is the default because the small embedded model cannot fill a typed intent reliably.
User text is only ever matched and measured here, never executed or forwarded as an
instruction; its size is capped before any work is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rapidfuzz import fuzz

from .catalogue import CatalogueIndex, Match
from .intent import MAX_GENRES, MAX_K, MAX_MENTIONS, Candidate, Clarification, Constraints, Intent, Mention
from .lexicon import (
    CUES,
    DECADE_WORDS,
    GENRE_WORDS,
    NEGATION,
    NEGATION_BREAK,
    NUMBER_WORDS,
    ORDINALS,
    REQUEST,
)

MAX_TEXT_CHARS = 4_000
LINK_THRESHOLD = 80.0  # after a cue ("I loved ...")
BARE_THRESHOLD = 88.0  # a title typed without any cue: stricter, prose must not link by accident
CONSTRAINT_THRESHOLD = 95.0  # a piece that also reads as a constraint ("before 1995") must match closely
AMBIGUITY_MARGIN = 3.0
MAX_PIECES = 12
POPULARITY_RATIO = 5.0  # a close match this many times more popular than the rest is taken without asking
POPULARITY_MIN = 10.0

_SENTENCE = re.compile(r"[.!?;\n]+(?=\s|$)|\n")
# A full stop after these is part of a title ("Kill Bill: Vol. 2", "Mrs. Doubtfire", "L.A. Confidential").
_ABBREVIATION = re.compile(r"(?:\b(?:vol|mr|mrs|ms|dr|st|jr|sr|no|pt|ep|vs|ft)|\b\w\.\w|\b\w)\.$", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?:,|;|/|\+|&|\band\b|\bor\b|\bplus\b|\bas well as\b|\bbut\b|\balso\b|\bthen\b)\s*",
                        re.IGNORECASE)
_JOINABLE = re.compile(r"^\s*(?:&|and|,)\s*$", re.IGNORECASE)  # separators that occur inside titles
_QUOTED = re.compile(r"\"([^\"\n]{1,200})\"|“([^”\n]{1,200})”|«([^»\n]{1,200})»")
_LEAD_FILLER = re.compile(
    r"^(?:(?:the |a )?(?:movies?|films?|ones?)\b(?: called| named)?|stuff like|things like|something like|"
    r"anything like|ones like|both|also|really|totally|all|even|just|only|and|or|too|me|it was|"
    r"recommend(?: me)?|suggest(?: me)?|give me|show me|please|some|more|others?|"
    r"(?:the )?(?:new|old|original|classic)|(?:i )?(?:think|guess))\s+", re.IGNORECASE)
_TRAIL_FILLER = re.compile(
    r"\s+(?:a lot|so much|very much|too|as well|also|please|though|lately|recently|before|already|movies?|films?|"
    r"ones?|again|a bunch|immensely|a ton|the most|more|i guess|haha|lol|is my|was my|is|was|are|were|my|all time)$", re.IGNORECASE)
_SPAN_YEAR = re.compile(r"\s*[(\[]?\b((?:19|20)\d\d)\b[)\]]?\s*$")
_JUNK = re.compile(
    r"^(?:a lot|so much|very much|too|as well|it|them|that|this|those|these|one|ones|movies?|films?|stuff|things|"
    r"something|anything|a bit|lately|recently|today|the most|please|thanks?|thank you|ok|okay|yes|no|more)$",
    re.IGNORECASE)
_DECADE_SIMPLE = re.compile(r"\b(?:the\s+)?(?:(19|20)(\d)0|'?(\d)0)'?s\b", re.IGNORECASE)
_BEFORE = re.compile(r"\b(?:before|earlier than|older than|prior to|pre-?)\s*((?:19|20)\d\d)\b", re.IGNORECASE)
_AFTER = re.compile(r"\b(after|since|newer than|later than|post-?|from)\s*((?:19|20)\d\d)\b(?!\s*(?:to|-|–|and))",
                    re.IGNORECASE)
_BETWEEN = re.compile(r"\b(?:between|from)?\s*((?:19|20)\d\d)\s*(?:-|–|to|and|until)\s*((?:19|20)\d\d)\b", re.IGNORECASE)
# "not before 1990", "nothing older than 1990", "none made after 2000", "nothing released after 2000"
_NEGATED = r"\b(?:not|no|nothing|none)\s+(?:(?:made|released|from|that came out)\s+)?"
_NOT_BEFORE = re.compile(_NEGATED + r"(?:older than|before|earlier than)\s*((?:19|20)\d\d)\b", re.IGNORECASE)
_NOT_AFTER = re.compile(_NEGATED + r"(?:newer than|after|later than)\s*((?:19|20)\d\d)\b", re.IGNORECASE)
_OLDER = re.compile(r"\b(?:older|earlier|classics?|less recent|not as new)\b", re.IGNORECASE)
_NEWER = re.compile(r"\b(?:newer|more recent|recent|latest|modern|not as old)\b", re.IGNORECASE)
_COUNT = re.compile(
    r"\b(?:top\s+)?(\d{1,3}|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")\s+"
    r"(?:(?:more|other|new|good|great|different|similar|\w+)\s+){0,2}"
    r"(?:movies|films|recommendations|suggestions|titles|picks|options|ones|things|more|comedies|dramas|westerns|"
    r"thrillers|documentaries|musicals|mysteries|cartoons|classics|romances|horrors)\b"
    r"|\btop\s+(\d{1,2})\b|\b(?:give me|recommend|suggest|show me)\s+(\d{1,2})\b",
    re.IGNORECASE,
)
_ORDINAL_REF = re.compile(
    r"\b(?:the\s+)?(" + "|".join(ORDINALS) + r")(?:\s+(?:one|movie|film|pick|suggestion|title|option))?\b"
    r"|(?:#|\bnumber\s*|\bno\.\s*)(\d{1,2})\b",
    re.IGNORECASE,
)
_ALL_REF = re.compile(r"\b(?:them|those|these|all of them|all of those|both|all|each of them|the lot)\b", re.IGNORECASE)
_ONE_REF = re.compile(r"\b(?:that|it|this|that one|this one)\b", re.IGNORECASE)
_POSTFIX = re.compile(r"^(?:favou?rites?|was |bored me|reminds?)", re.IGNORECASE)  # "X is my favourite"
_FIRST_N = re.compile(r"\b(?:the\s+)?(first|last|top)\s+(two|three|four|five|\d)\b", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^\s*(?:#|option\s*|number\s*)?(\d{1,2})\s*[.!]?\s*$", re.IGNORECASE)


@dataclass
class ParseContext:
    """What the conversation so far gives the parser: the previous answer and an open question."""

    previous_ids: list[str] = field(default_factory=list)
    pending: Clarification | None = None


@dataclass
class _Span:
    text: str
    start: int
    end: int
    polarity: str | None  # None: no cue (a bare title)


def _genre_patterns(catalogue: CatalogueIndex) -> list[tuple[str, re.Pattern[str]]]:
    known = {g.lower(): g for g in catalogue.genre_names}
    out = []
    for genre, words in GENRE_WORDS.items():
        if genre.lower() not in known:
            continue
        alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        out.append((known[genre.lower()], re.compile(rf"(?<![\w-])(?:{alts})(?![\w-])", re.IGNORECASE)))
    return out


class DeterministicParser:
    """Parses one user message into an :class:`Intent` (``parser: "deterministic"``)."""

    name = "deterministic"

    def __init__(self, catalogue: CatalogueIndex) -> None:
        self.catalogue = catalogue
        self._genres = _genre_patterns(catalogue)

    # ---- entry point ------------------------------------------------------------------
    def parse(self, text: str, context: ParseContext | None = None) -> Intent:
        context = context or ParseContext()
        notes: list[str] = []
        if len(text) > MAX_TEXT_CHARS:
            text = text[:MAX_TEXT_CHARS]
            notes.append(f"message truncated to {MAX_TEXT_CHARS} characters")
        mentions: list[Mention] = []
        taken: list[tuple[int, int]] = []  # char ranges already explained (titles, references)
        resolved = self.resolve_clarification(text, context.pending) if context.pending else None
        if resolved is not None:
            mentions.append(resolved)
            taken.append((0, len(text)))
        else:
            mentions += self.references(text, context.previous_ids, taken)
            mentions += self.title_mentions(text, taken, notes)
        if len(mentions) > MAX_MENTIONS:
            notes.append(f"only the first {MAX_MENTIONS} of {len(mentions)} mentions are used")
            mentions = mentions[:MAX_MENTIONS]
        constraints, relative = self.constraints(text, taken, notes)
        wants = bool(REQUEST.search(text))
        off_topic = not (mentions or not constraints.is_empty() or relative or wants)
        return Intent(mentions=mentions, constraints=constraints, relative_year=relative,
                      wants_recommendation=wants, off_topic=off_topic, parser="deterministic", notes=notes)

    # ---- linking ------------------------------------------------------------------------
    def link(self, text: str, polarity: str, threshold: float, source: str = "text") -> Mention | None:
        """Link one span to the catalogue: one clear winner, several close ones (ambiguous), or None."""
        year = None
        m = _SPAN_YEAR.search(text)
        if m and m.start() > 0:
            year, text = int(m.group(1)), text[: m.start()]
        matches = self.catalogue.search(text, limit=8, year=year)
        if not matches or matches[0].score < threshold:
            return None
        top = matches[0]
        close = [x for x in matches if x.exact == top.exact and top.score - x.score <= AMBIGUITY_MARGIN]
        # "unseen" spans are linked only to be consumed; the caller drops them.
        polarity = "liked" if polarity == "unseen" else polarity
        mention = Mention(text=text[:300], polarity=polarity, score=round(top.score, 1), source=source)  # type: ignore[arg-type]
        close = self._by_popularity(close)
        if len(close) == 1:
            mention.item_id, mention.title = close[0].item.id, close[0].item.title
        else:
            mention.candidates = [_candidate(x) for x in close[:5]]
        return mention

    def _by_popularity(self, close: list[Match]) -> list[Match]:
        """Among close matches, one far more popular than all others wins (no question needed)."""
        pop = self.catalogue.popularity
        if len(close) < 2 or not pop:
            return close
        ranked = sorted(close, key=lambda m: pop.get(m.item.id, 0.0), reverse=True)
        first, second = pop.get(ranked[0].item.id, 0.0), pop.get(ranked[1].item.id, 0.0)
        if first >= POPULARITY_MIN and first >= POPULARITY_RATIO * second:
            return [ranked[0]]
        return close

    def title_mentions(self, text: str, taken: list[tuple[int, int]], notes: list[str]) -> list[Mention]:
        out: list[Mention] = []
        for q in _QUOTED.finditer(text):
            if _overlaps(q.span(), taken):
                continue
            title = next(g for g in q.groups() if g)
            polarity = self._polarity_before(text, q.start()) or "liked"
            mention = self.link(title, polarity, LINK_THRESHOLD)
            taken.append(q.span())
            if mention is None:
                notes.append(f"no catalogue item matches {title!r}")
                continue
            if polarity != "unseen":
                out.append(mention)
        spans = self._spans(text, taken)
        for span in spans:
            if len(out) > MAX_MENTIONS:
                break
            out += self._link_span(span, text, taken, notes)
        return out

    def _link_span(self, span: _Span, text: str, taken: list[tuple[int, int]], notes: list[str]) -> list[Mention]:
        """Split a clause into title-sized pieces; rejoin pieces where that matches a title better
        ("Sense and Sensibility", "Crouching Tiger, Hidden Dragon")."""
        pieces = _pieces(span)
        polarity = span.polarity or "liked"
        threshold = LINK_THRESHOLD if span.polarity else BARE_THRESHOLD
        out: list[Mention] = []
        i = 0
        while i < len(pieces):
            found = None
            for j in range(min(len(pieces), i + 3) - 1, i, -1):  # try joined runs first, longest first
                if not all(_JOINABLE.match(text[pieces[t][2]:pieces[t + 1][1]]) for t in range(i, j)):
                    continue
                joined = _clean(text[pieces[i][1]:pieces[j][2]])
                mention = self.link(joined, polarity, max(threshold, 95.0)) if joined else None
                if mention is not None and mention.item_id is not None:
                    found, i_next = (mention, (pieces[i][1], pieces[j][2])), j + 1
                    break
            if found is None:
                piece, start, end = pieces[i]
                i_next = i + 1
                cleaned = _clean(piece)
                if len(cleaned) >= 2 and not _JUNK.match(cleaned):
                    strict = self._is_constraint_text(cleaned)
                    mention = self.link(cleaned, polarity, CONSTRAINT_THRESHOLD if strict else threshold)
                    raw = " ".join(piece.split()).strip(" -–:!?.,'\"")
                    if raw != cleaned and (mention is None or mention.score < 100):
                        # the filler words may belong to the title ("Scary Movie", "The One")
                        alt = self.link(raw, polarity, CONSTRAINT_THRESHOLD)
                        if alt is not None and alt.item_id and (mention is None or alt.score > mention.score):
                            mention = alt
                    if mention is not None:
                        found = (mention, (start, end))
                    elif span.polarity and not self._is_constraint_text(cleaned):
                        notes.append(f"no catalogue item matches {cleaned[:80]!r}")
            if found is not None:
                mention, where = found
                taken.append(where)
                if polarity != "unseen":
                    out.append(mention)
            i = i_next
        return out

    def _is_constraint_text(self, text: str) -> bool:
        return bool(_COUNT.search(text) or _DECADE_SIMPLE.search(text) or _BEFORE.search(text)
                    or _AFTER.search(text) or _OLDER.search(text) or _NEWER.search(text) or REQUEST.search(text)
                    or any(p.search(text) for _, p in self._genres))

    def _spans(self, text: str, taken: list[tuple[int, int]]) -> list[_Span]:
        """Per sentence: the clause after each polarity cue (up to the next cue), and the text
        before the first cue as a bare span ("Heat was great", "Alien, Heat")."""
        spans: list[_Span] = []
        start = 0
        for end in _sentence_ends(text) + [len(text)]:
            cues = [c for c in CUES.finditer(text, start, end) if not _overlaps(c.span(), taken)]
            head_end = cues[0].start() if cues else end
            head_polarity = _cue_polarity(cues[0]) if cues and _POSTFIX.match(cues[0].group(0)) else None
            spans.append(_Span(text[start:head_end], start, head_end, head_polarity))
            for n, cue in enumerate(cues):
                stop = cues[n + 1].start() if n + 1 < len(cues) else end
                spans.append(_Span(text[cue.end():stop], cue.end(), stop, _cue_polarity(cue)))
            start = end + 1
        return [_mask(s, taken) for s in spans if s.text.strip()]

    def _polarity_before(self, text: str, pos: int) -> str | None:
        """The last cue before ``pos`` in the same sentence."""
        sentence_start = max([e + 1 for e in _sentence_ends(text) if e < pos] + [0])
        found = None
        for cue in CUES.finditer(text, sentence_start, pos):
            found = next(k for k, v in cue.groupdict().items() if v)
        return found

    # ---- references to the previous answer ----------------------------------------------------
    def references(self, text: str, previous: list[str], taken: list[tuple[int, int]]) -> list[Mention]:
        """'more like the second one', 'I've seen that', 'seen all of them' -> the previous answer's items."""
        if not previous:
            return []
        out: list[Mention] = []
        for m in _FIRST_N.finditer(text):
            n = NUMBER_WORDS.get(m.group(2).lower()) or int(m.group(2))
            chosen = previous[-n:] if m.group(1).lower() == "last" else previous[:n]
            polarity = self._polarity_before(text, m.start()) or "liked"
            taken.append(m.span())
            if polarity != "unseen":
                out += [self._reference(i, polarity, m.group(0)) for i in chosen]
        for m in _ORDINAL_REF.finditer(text):
            if _overlaps(m.span(), taken):
                continue
            word, number = m.group(1), m.group(2)
            if word and word.lower() == "top" and not re.match(r"\s*(?:one|pick)", text[m.end(1):]):
                continue
            index = ORDINALS[word.lower()] if word else int(number)
            if index == -1:
                index = len(previous)
            polarity = self._polarity_before(text, m.start()) or "liked"
            if 1 <= index <= len(previous):
                taken.append(m.span())
                if polarity != "unseen":
                    out.append(self._reference(previous[index - 1], polarity, m.group(0)))
        for m in _ALL_REF.finditer(text):
            polarity = self._polarity_before(text, m.start())
            if polarity and not _overlaps(m.span(), taken) and _cue_adjacent(text, m.start()):
                taken.append(m.span())
                if polarity != "unseen":
                    out += [self._reference(i, polarity, m.group(0)) for i in previous]
        for m in _ONE_REF.finditer(text):
            polarity = self._polarity_before(text, m.start())
            if polarity in ("seen", "disliked", "liked") and not _overlaps(m.span(), taken) and _cue_adjacent(text, m.start()):
                # "that" after a list of picks means the one the user is looking at: the top pick.
                out.append(self._reference(previous[0], polarity, m.group(0)))
                taken.append(m.span())
        return out

    def _reference(self, item_id: str, polarity: str, text: str) -> Mention:
        item = self.catalogue.by_id[item_id]
        return Mention(text=text[:300], polarity=polarity, item_id=item.id, title=item.title, score=100.0,  # type: ignore[arg-type]
                       source="reference")

    def resolve_clarification(self, text: str, pending: Clarification) -> Mention | None:
        """The user's answer to "which one did you mean?": a number, an ordinal, a year or a title."""
        options = pending.options
        pick: Candidate | None = None
        bare = _BARE_NUMBER.match(text)
        ordinal = _ORDINAL_REF.search(text)
        if bare and 1 <= int(bare.group(1)) <= len(options):
            pick = options[int(bare.group(1)) - 1]
        elif ordinal:
            word, number = ordinal.group(1), ordinal.group(2)
            index = ORDINALS[word.lower()] if word else int(number)
            index = len(options) if index == -1 else index
            if 1 <= index <= len(options):
                pick = options[index - 1]
        if pick is None:
            year = re.search(r"\b((?:19|20)\d\d)\b", text)
            by_year = [o for o in options if year and str(item_year_of(self.catalogue, o.id)) == year.group(1)]
            if len(by_year) == 1:
                pick = by_year[0]
        if pick is None:
            scored = sorted(((fuzz.partial_ratio(text.lower(), o.title.lower()), o) for o in options),
                            key=lambda t: t[0], reverse=True)
            if scored and scored[0][0] >= 80 and (len(scored) == 1 or scored[0][0] - scored[1][0] >= 5):
                pick = scored[0][1]
        if pick is None:
            return None
        return Mention(text=pending.mention, polarity=pending.polarity, item_id=pick.id, title=pick.title,
                       score=pick.score, source="clarification")

    # ---- constraints ------------------------------------------------------------------------
    def constraints(self, text: str, taken: list[tuple[int, int]], notes: list[str]) -> tuple[Constraints, Literal["older", "newer"] | None]:
        include, exclude = self._genre_filters(text, taken, notes)
        masked = _mask_text(text, taken)
        year_min, year_max = _year_range(masked)
        relative: Literal["older", "newer"] | None = None
        if year_min is None and year_max is None:  # "something older": relative to what was shown or named
            relative = "older" if _OLDER.search(masked) else "newer" if _NEWER.search(masked) else None
        return Constraints(include_genres=include[:MAX_GENRES], exclude_genres=exclude[:MAX_GENRES],
                           year_min=year_min, year_max=year_max, k=_count(masked, notes)), relative

    def _genre_filters(self, text: str, taken: list[tuple[int, int]], notes: list[str]) -> tuple[list[str], list[str]]:
        """Genres asked for and genres refused ("no horror"), outside titles."""
        include: list[str] = []
        exclude: list[str] = []
        for genre, pattern in self._genres:
            for m in pattern.finditer(text):
                if _overlaps(m.span(), taken):
                    continue  # a genre word inside a title ("Scary Movie")
                window = text[max(0, m.start() - 40):m.start()]
                breaks = list(NEGATION_BREAK.finditer(window))
                if breaks:
                    window = window[breaks[-1].end():]
                target = exclude if NEGATION.search(window) else include
                if genre not in target:
                    target.append(genre)
        include = [g for g in include if g not in exclude]
        if len(include) + len(exclude) > 2 * MAX_GENRES:
            notes.append("too many genres; the first ones are used")
        return include, exclude


def _year_range(masked: str) -> tuple[int | None, int | None]:
    """"between 1990 and 1995", "the 90s", "before 2000", "from 1985", "not after 1999" (titles masked)."""
    year_min = year_max = None
    for m in _BETWEEN.finditer(masked):
        year_min, year_max = sorted((int(m.group(1)), int(m.group(2))))
    if year_min is not None:
        return year_min, year_max
    for m in _DECADE_SIMPLE.finditer(masked):
        century, decade, short = m.group(1), m.group(2), m.group(3)
        if century:
            start = int(century) * 100 + int(decade) * 10
        else:
            start = (1900 if int(short) >= 2 else 2000) + int(short) * 10
        year_min, year_max = start, start + 9
    for m in re.finditer(r"\b(" + "|".join(DECADE_WORDS) + r")\b", masked, re.IGNORECASE):
        start = 1900 + DECADE_WORDS[m.group(1).lower()]
        year_min, year_max = start, start + 9
    for m in _BEFORE.finditer(masked):
        year_max = int(m.group(1)) - 1
    for m in _AFTER.finditer(masked):
        word, year = m.group(1).lower(), int(m.group(2))
        year_min = year + 1 if word in ("after", "newer than", "later than", "post", "post-") else year
        if word == "from":
            year_max = year
    for m in _NOT_BEFORE.finditer(masked):
        year_min, year_max = int(m.group(1)), None if year_max == int(m.group(1)) - 1 else year_max
    for m in _NOT_AFTER.finditer(masked):
        year_min, year_max = None if year_min == int(m.group(1)) + 1 else year_min, int(m.group(1))
    return year_min, year_max


def _count(masked: str, notes: list[str]) -> int | None:
    """How many items were asked for ("five", "top 3"), capped at ``MAX_K``; none or zero: ``None``."""
    k = None
    for m in _COUNT.finditer(masked):
        raw = next(g for g in m.groups() if g)
        value = NUMBER_WORDS.get(raw.lower()) if not raw.isdigit() else int(raw)
        if value:
            k = value
    if k is not None and k > MAX_K:
        notes.append(f"asked for {k} items; at most {MAX_K} are given")
        k = MAX_K
    return k or None


def item_year_of(catalogue: CatalogueIndex, item_id: str) -> int | None:
    return catalogue.years.get(item_id)


def _sentence_ends(text: str) -> list[int]:
    return [m.start() for m in _SENTENCE.finditer(text)
            if not (text[m.start()] == "." and _ABBREVIATION.search(text[max(0, m.start() - 5):m.start() + 1]))]


def _cue_polarity(cue: re.Match[str]) -> str:
    return next(k for k, v in cue.groupdict().items() if v)


def _candidate(m: Match) -> Candidate:
    return Candidate(id=m.item.id, title=m.item.title, score=round(m.score, 1))


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < e and s < span[1] for s, e in taken)


def _mask_text(text: str, taken: list[tuple[int, int]]) -> str:
    chars = list(text)
    for s, e in taken:
        for i in range(max(s, 0), min(e, len(chars))):
            chars[i] = " "
    return "".join(chars)


def _mask(span: _Span, taken: list[tuple[int, int]]) -> _Span:
    local = [(s - span.start, e - span.start) for s, e in taken]
    return _Span(_mask_text(span.text, local), span.start, span.end, span.polarity)


def _cue_adjacent(text: str, pos: int) -> bool:
    """A pronoun right after its cue ("seen that", "loved both of them"), not anywhere in the sentence."""
    before = text[max(0, pos - 30):pos]
    return bool(CUES.search(before) and re.search(r"(?:\w+\W+){0,3}$", before)
                and CUES.search(" ".join(before.split()[-4:])))


def _pieces(span: _Span) -> list[tuple[str, int, int]]:
    """(text, start, end) pieces of a clause between separators, absolute offsets."""
    out: list[tuple[str, int, int]] = []
    pos = 0
    for sep in _SEPARATOR.finditer(span.text):
        if sep.start() > pos:
            out.append((span.text[pos:sep.start()], span.start + pos, span.start + sep.start()))
        pos = sep.end()
    if pos < len(span.text):
        out.append((span.text[pos:], span.start + pos, span.start + len(span.text)))
    return [p for p in out if p[0].strip()][:MAX_PIECES]


def _clean(text: str) -> str:
    text = " ".join(text.split()).strip(" -–:!?.,'\"")
    for _ in range(4):
        new = _TRAIL_FILLER.sub("", _LEAD_FILLER.sub("", text)).strip(" -–:!?.,")
        if new == text:
            break
        text = new
    return text
