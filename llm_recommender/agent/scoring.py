"""Score the agent on a dialogue set (eval/dialogues/dialogues.jsonl): linking, constraints,
exclusions, questions back, off-topic handling. Shared by eval/run_dialogues.py and the tests.

A dialogue is ``{"id", "note", "turns": [{"user", "expect": {...}}]}``; the agent's own answers
are fed back as the assistant turns, exactly as a chat client would. In ``expect``:
``kind``; ``mentions`` [{id, polarity, hard}] (``"@prevN"`` = the N-th item of the previous
answer); ``constraints`` (the expected constraints so far, also checked on every later
recommendation); ``options_include``; ``older_than_previous``/``newer_than_previous``/
``newer_than_mentions``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..data.movielens import natural_title
from .agent import RankFn, chat_turn
from .catalogue import _PAREN, _YEAR, CatalogueIndex
from .parser import DeterministicParser

Fields = ("include_genres", "exclude_genres", "year_min", "year_max", "k")


def load_dialogues(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _respects(item_id: str, c: dict[str, Any], catalogue: CatalogueIndex) -> bool:
    year = catalogue.years.get(item_id)
    genres = set(catalogue.genres.get(item_id, []))
    if c.get("year_min") is not None and (year is None or year < c["year_min"]):
        return False
    if c.get("year_max") is not None and (year is None or year > c["year_max"]):
        return False
    if not set(c.get("include_genres", [])) <= genres:
        return False
    return not (genres & set(c.get("exclude_genres", [])))


COUNTS = ["mentions", "linked", "hard", "hard_linked", "spurious", "constraint_turns", "constraint_ok", "recommended",
          "in_catalogue", "never_violations", "constraint_violations", "relative_checks", "relative_ok", "ask_expected",
          "ask_ok", "off_expected", "off_ok", "turns", "kind_ok", "popularity_variants"]


def run_dialogues(dialogues: list[dict[str, Any]], catalogue: CatalogueIndex, rank_fn: RankFn,
                  parser: Any = "deterministic", backend: Any = None,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    c = dict.fromkeys(COUNTS, 0)
    failures: list[dict[str, Any]] = []
    latencies: list[float] = []
    for dialogue in dialogues:
        messages: list[dict[str, str]] = []
        previous: list[str] = []
        expected_c: dict[str, Any] = {}
        never: set[str] = set()
        # A catalogue that knows interaction counts resolves some ambiguous titles itself ("Titanic" is the 1997
        # film): such dialogues give the turns expected then.
        turns = dialogue.get("turns_with_popularity") if catalogue.popularity else None
        c["popularity_variants"] += turns is not None
        for n, turn in enumerate(turns or dialogue["turns"]):
            exp = turn["expect"]
            messages.append({"role": "user", "content": turn["user"]})
            start = clock()
            text, answer = chat_turn(messages, catalogue, rank_fn, parser=parser, backend=backend)
            latencies.append(clock() - start)
            problems: list[str] = []
            c["turns"] += 1
            if answer.kind == exp["kind"]:
                c["kind_ok"] += 1
            else:
                problems.append(f"kind {answer.kind} != {exp['kind']}")
            expected_ids = _check_mentions(c, exp, answer.plan, previous, problems)
            never |= expected_ids  # a mentioned item (liked ones too) is known to the user: never recommend it
            expected_c = _check_constraints(c, exp, answer.plan, problems) if "constraints" in exp else expected_c
            _check_questions(c, exp, answer, problems)
            items = [it.id for it in answer.recommendation.items] if answer.recommendation else []
            _check_items(c, items, never, expected_c, catalogue, problems)
            _check_relative(c, exp, items, previous, expected_ids, catalogue, problems)
            if problems:
                failures.append({"turn": f"{dialogue['id']}[{n}]", "user": turn["user"], "problems": problems})
            messages.append({"role": "assistant", "content": text})
            if items:
                previous = items
                never |= set(items)  # shown once, never again
    return _summary(c, len(dialogues), latencies, failures)


def _check_mentions(c: dict[str, int], exp: dict[str, Any], plan: Any, previous: list[str], problems: list[str]) -> set[str]:
    """Each expected mention linked with its polarity, none spurious; returns the expected item ids."""
    expected_ids = set()
    for m in exp.get("mentions", []):
        item_id = previous[int(m["id"][5:]) - 1] if m["id"].startswith("@prev") else m["id"]
        expected_ids.add(item_id)
        ok = any(x.item_id == item_id and x.polarity == m["polarity"] for x in plan.mentions)
        c["mentions"] += 1
        c["linked"] += ok
        if m.get("hard"):
            c["hard"] += 1
            c["hard_linked"] += ok
        if not ok:
            got = [(x.text, x.item_id, x.polarity) for x in plan.mentions]
            problems.append(f"mention {item_id}/{m['polarity']} not linked; got {got}")
    spurious = [x for x in plan.mentions if x.item_id and x.item_id not in expected_ids]
    c["spurious"] += len(spurious)
    if spurious:
        problems.append(f"spurious mentions {[(x.text, x.item_id) for x in spurious]}")
    return expected_ids


def _check_constraints(c: dict[str, int], exp: dict[str, Any], plan: Any, problems: list[str]) -> dict[str, Any]:
    """The constraints parsed so far equal the expected ones; returns the expected ones (checked on later turns)."""
    expected = exp["constraints"]
    got = plan.constraints.model_dump()
    c["constraint_turns"] += 1
    diffs = {f: (got[f], expected.get(f)) for f in Fields
             if (sorted(got[f]) if isinstance(got[f], list) else got[f])
             != (sorted(expected.get(f, [])) if f.endswith("genres") else expected.get(f))}
    if diffs:
        problems.append(f"constraints differ (got, expected): {diffs}")
    else:
        c["constraint_ok"] += 1
    return expected


def _check_questions(c: dict[str, int], exp: dict[str, Any], answer: Any, problems: list[str]) -> None:
    """An ambiguous turn asks back with the expected options; an off-topic one recommends nothing."""
    plan = answer.plan
    if exp["kind"] == "clarification":
        c["ask_expected"] += 1
        options = {o.id for o in plan.clarification.options} if plan.clarification else set()
        if answer.kind == "clarification" and set(exp.get("options_include", [])) <= options:
            c["ask_ok"] += 1
        else:
            problems.append(f"expected a question with options {exp.get('options_include')}, got {options}")
    if exp["kind"] == "off_topic":
        c["off_expected"] += 1
        if answer.kind == "off_topic" and answer.recommendation is None:
            c["off_ok"] += 1


def _check_items(c: dict[str, int], items: list[str], never: set[str], expected_c: dict[str, Any],
                 catalogue: CatalogueIndex, problems: list[str]) -> None:
    """Recommended items are in the catalogue, never mentioned or shown before, and respect the constraints."""
    for item_id in items:
        c["recommended"] += 1
        c["in_catalogue"] += item_id in catalogue
        if item_id in never:
            c["never_violations"] += 1
            problems.append(f"recommended a mentioned/seen item {item_id}")
        if not _respects(item_id, expected_c, catalogue):
            c["constraint_violations"] += 1
            problems.append(f"item {item_id} breaks constraints {expected_c}")


def _check_relative(c: dict[str, int], exp: dict[str, Any], items: list[str], previous: list[str],
                    expected_ids: set[str], catalogue: CatalogueIndex, problems: list[str]) -> None:
    """"older"/"newer" refinements: every item older (newer) than the previous answer or the mentions."""
    for key, ref in (("older_than_previous", previous), ("newer_than_previous", previous),
                     ("newer_than_mentions", list(expected_ids))):
        if exp.get(key):
            c["relative_checks"] += 1
            years = [y for i in ref if (y := catalogue.years.get(i))]
            got_years = [catalogue.years.get(i) or 0 for i in items]
            ok = bool(items and years) and (all(y < min(years) for y in got_years) if key.startswith("older")
                                            else all(y > max(years) for y in got_years))
            c["relative_ok"] += ok
            if not ok:
                problems.append(f"{key}: {got_years} vs {years}")


def _summary(c: dict[str, int], dialogues: int, latencies: list[float], failures: list[dict[str, Any]]) -> dict[str, Any]:
    def rate(a: str, b: str) -> float | None:
        return round(c[a] / c[b], 4) if c[b] else None

    latencies = sorted(latencies)
    return {
        "dialogues": dialogues, "turns": c["turns"], "counts": c,
        "metrics": {
            "mention_linking_accuracy": rate("linked", "mentions"),
            "mention_linking_accuracy_typos_or_missing_year": rate("hard_linked", "hard"),
            "constraint_parse_accuracy": rate("constraint_ok", "constraint_turns"),
            "recommended_in_catalogue": rate("in_catalogue", "recommended"),
            "recommended_never_mentioned_or_seen": (1.0 - c["never_violations"] / c["recommended"]) if c["recommended"] else None,
            "recommended_respect_constraints": (1.0 - c["constraint_violations"] / c["recommended"]) if c["recommended"] else None,
            "relative_year_refinements_ok": rate("relative_ok", "relative_checks"),
            "ambiguous_asks_back": rate("ask_ok", "ask_expected"),
            "off_topic_handled": rate("off_ok", "off_expected"),
            "answer_kind_accuracy": rate("kind_ok", "turns"),
            "spurious_mentions": c["spurious"],
        },
        "latency_s": {"mean": round(sum(latencies) / len(latencies), 4) if latencies else None,
                      "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 4) if latencies else None},
        "failures": failures,
    }


def typo(title: str, rng: Any) -> str:
    """The title as a user might type it: no year, MovieLens article moved back, lower case, one
    random edit (drop, double, swap or replace a letter) in a word of 4+ letters."""
    text = _PAREN.sub("", _YEAR.sub("", natural_title(title))).lower()  # users type the main title only
    words = text.split()
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = long[rng.randrange(len(long))]
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    op = rng.randrange(4)
    if op == 0:
        w = w[:j] + w[j + 1:]
    elif op == 1:
        w = w[:j] + w[j] + w[j:]
    elif op == 2:
        w = w[:j - 1] + w[j] + w[j - 1] + w[j + 1:]
    else:
        w = w[:j] + rng.choice("abcdefghijklmnopqrstuvwxyz") + w[j + 1:]
    words[i] = w
    return " ".join(words)


def typo_linking(catalogue: CatalogueIndex, item_ids: list[str], seed: int = 0) -> dict[str, Any]:
    """Held-out check of linking: "I loved <typo'd title>" for each item; correct = linked to it.

    An ambiguous answer (a question back) counts as not linked, unless the item is among the
    options *and* another catalogue title is the same once typo'd (then asking is right)."""
    rng = random.Random(seed)
    parser = DeterministicParser(catalogue)
    linked = asked = wrong = missed = 0
    examples = []
    for item_id in item_ids:
        mention = typo(catalogue.by_id[item_id].title, rng)
        intent = parser.parse(f"I loved {mention}")
        got = [m for m in intent.mentions]
        if any(m.item_id == item_id for m in got):
            linked += 1
            continue
        if any(m.ambiguous and item_id in {c.id for c in m.candidates} for m in got):
            asked += 1
        elif got:
            wrong += 1
        else:
            missed += 1
        if len(examples) < 25:
            examples.append({"item": catalogue.by_id[item_id].title, "typed": mention,
                             "got": [(m.item_id, m.title, [c.title for c in m.candidates][:3]) for m in got]})
    n = len(item_ids)
    return {"items": n, "seed": seed, "linked": linked, "asked_back_with_it_among_options": asked,
            "linked_to_another": wrong, "not_found": missed, "accuracy": round(linked / n, 4) if n else None,
            "accuracy_or_asked": round((linked + asked) / n, 4) if n else None, "examples": examples}
