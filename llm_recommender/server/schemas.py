"""A client's ``response_format.json_schema.schema``: data to check an answer against, never a
pointer to follow.

- Only local references (``#`` or ``#/...``) resolve: the registry has no retrieve function, and
  any other ``$ref``/``$dynamicRef``/``$recursiveRef``, a ``$id``, or an unknown ``$schema`` is
  refused by a walk over the schema BEFORE jsonschema sees it. Nothing is fetched or opened.
- Size and nesting are bounded (:data:`MAX_SCHEMA_BYTES`, :data:`MAX_SCHEMA_DEPTH`).
- Client regexes (``pattern``, ``patternProperties`` and the ``additionalProperties`` that
  consults them) run through the ``regex`` package with a timeout, which also releases the GIL
  while matching; ``unevaluatedProperties`` together with ``patternProperties`` is refused
  (jsonschema would run those patterns through :mod:`re`, which cannot be interrupted).
- Checking and validating run off the event loop (:func:`asyncio.to_thread`) under a deadline
  that every keyword checks, so the worker thread stops soon after the client got its 400.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InvalidRequestError
from ..protocol import check_text

PARAM = "response_format.json_schema.schema"
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
REGEX_TIMEOUT_S = 0.05  # one pattern against one string
TIME_LIMIT_S = 0.5  # checking the schema, or validating one answer against it
# Keyword evaluations allowed per JSON value checked: a legitimate schema applies a handful of keywords
# to each value; an exponential one (nested anyOf over shared refs) is stopped by count long before
# the time limit, so it never holds the GIL for long (measured: /health p99 over 300 ms without it).
EVALUATIONS_PER_VALUE = 8
MIN_EVALUATIONS = 2_048

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
_calls = itertools.count()
_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("schema_deadline", default=float("inf"))
_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("schema_budget", default=None)


class _OutOfTime(Exception):
    def __init__(self, pattern: str | None = None, evaluations: int | None = None) -> None:
        super().__init__(pattern)
        self.pattern = pattern
        self.evaluations = evaluations


def _values(data: Any) -> int:
    """How many JSON values ``data`` holds (objects, arrays and scalars, nested ones included)."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def _quote(value: Any, limit: int = 120) -> str:
    """A client string for an error message: ASCII-escaped (never a lone surrogate), truncated."""
    text = ascii(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def _refuse(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=PARAM)


# ---- the walk: before jsonschema sees the schema ---------------------------------------------------


def _known_dialects() -> set[str]:
    from jsonschema import validators

    known = vars(validators)["_META_SCHEMAS"]  # the dialects validator_for knows (all shipped, none fetched)
    return {str(uri).rstrip("#") for uri in known}


def inspect_schema(schema: Any) -> None:
    """Refuse, with a 400 naming the field, a schema that is too big, too deep, or points anywhere
    but inside itself. Runs before any jsonschema call."""
    if not isinstance(schema, (dict, bool)):
        raise _refuse(f"a JSON schema is an object or a boolean, not {type(schema).__name__}")
    try:
        size = len(json.dumps(schema, ensure_ascii=True))
    except (TypeError, ValueError, RecursionError):
        raise _refuse("the schema is not plain JSON data") from None
    if size > MAX_SCHEMA_BYTES:
        raise _refuse(f"the schema is {size} bytes of JSON; this server accepts at most {MAX_SCHEMA_BYTES} "
                      "(MAX_SCHEMA_BYTES)")
    dialects: set[str] | None = None
    pattern_properties = unevaluated = False
    stack: list[tuple[Any, int, str]] = [(schema, 1, "#")]
    while stack:
        node, depth, where = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise _refuse(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels (MAX_SCHEMA_DEPTH) at {_quote(where)}")
        if isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}/{k}") for k, v in enumerate(node))
            continue
        if not isinstance(node, dict):
            if isinstance(node, str):
                _text(node, where)
            continue
        for key, value in node.items():
            _text(key, where)
            if key in _REF_KEYWORDS:
                if not (isinstance(value, str) and (value == "#" or value.startswith("#/"))):
                    raise _refuse(f"{key} {_quote(value)} at {_quote(where)} is not a local reference: only '#' and "
                                  "'#/...' resolve here (the schema is data; nothing it names is fetched or opened)")
            elif key == "$id" and isinstance(value, str):
                raise _refuse(f"$id {_quote(value)} at {_quote(where)} is not accepted: the schema is one document "
                              "and refers only to itself ('#/...')")
            elif key == "$schema":
                if dialects is None:
                    dialects = _known_dialects()
                if not isinstance(value, str) or value.rstrip("#") not in dialects:
                    raise _refuse(f"$schema {_quote(value)} is not a JSON Schema dialect this server knows "
                                  "(leave it out for draft 2020-12)")
            elif key == "patternProperties":
                pattern_properties = True
            elif key == "unevaluatedProperties":
                unevaluated = True
            stack.append((value, depth + 1, f"{where}/{key}"))
    if pattern_properties and unevaluated:
        raise _refuse("unevaluatedProperties together with patternProperties is not supported here "
                      "(use additionalProperties)")


def _text(value: str, where: str) -> None:
    try:
        check_text(value)
    except ValueError as exc:
        raise _refuse(f"text in the schema at {_quote(where)}: {exc}") from None


# ---- regexes with a timeout ----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    import regex

    return regex.compile(pattern)


def _search(pattern: str, text: str) -> bool:
    remaining = _deadline.get() - time.monotonic()
    if remaining <= 0:
        raise _OutOfTime(pattern)
    try:
        return _compiled(pattern).search(text, timeout=min(REGEX_TIMEOUT_S, remaining)) is not None
    except TimeoutError:
        raise _OutOfTime(pattern) from None


def _compiles(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    import regex

    try:
        _compiled(instance)
    except regex.error:
        return False
    return True


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_quote(instance)} does not match {_quote(pattern)}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, additional: Any, instance: Any, schema: Any) -> Iterator[Any]:
    # jsonschema's own version joins patternProperties into one re.search; the same logic, timed.
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            yield ValidationError(f"{', '.join(_quote(e) for e in sorted(extras))} do not match any of the "
                                  f"regexes: {', '.join(_quote(p) for p in sorted(patterns))}")
        else:
            yield ValidationError(f"Additional properties are not allowed ({', '.join(_quote(e) for e in extras)} "
                                  "unexpected)")


def _timed(keyword: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    """Every keyword looks at the deadline first: exponential schemas (nested anyOf) stop too."""

    def run(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if time.monotonic() > _deadline.get():
            raise _OutOfTime()
        left = _budget.get()
        if left is not None:
            left[0] -= 1
            if left[0] < 0:
                raise _OutOfTime(evaluations=left[1])
        if next(_calls) % 64 == 0:
            # Hand the GIL to the event loop now and then: a pure-Python validation running for its
            # whole time limit would otherwise slow every other request (measured: /health 340 ms).
            time.sleep(0.0005)
        result = keyword(validator, value, instance, schema)
        if result is not None:
            yield from result

    return run


@functools.lru_cache(maxsize=16)
def _validator_class(base: type) -> Any:
    from jsonschema import validators

    keywords = {k: _timed(v) for k, v in base.VALIDATORS.items()}  # pyright: ignore[reportAttributeAccessIssue]
    for name, fn in (("pattern", _pattern), ("patternProperties", _pattern_properties),
                     ("additionalProperties", _additional_properties)):
        if name in keywords:
            keywords[name] = _timed(fn)
    return validators.extend(base, keywords)


def _format_checker() -> Any:
    from jsonschema import FormatChecker

    checker = FormatChecker()
    checker.checks("regex")(_compiles)  # the patterns we accept are the ones we can run
    return checker


# ---- the two entry points (each runs in a worker thread under the deadline) -------------------------


def _check(schema: Any) -> None:
    import jsonschema
    import referencing.exceptions
    from jsonschema import validators

    base = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        base.check_schema(schema, format_checker=_format_checker())  # pyright: ignore[reportCallIssue]
    except jsonschema.SchemaError as exc:
        raise _refuse(f"not a valid JSON schema: {_quote(exc.message, 300)}") from None
    except referencing.exceptions.Unresolvable as exc:
        raise _refuse(f"not a valid JSON schema: cannot resolve {_quote(str(exc))}") from None


def _validate(schema: Any, answer: Any) -> None:
    import referencing
    import referencing.exceptions
    from jsonschema import validators
    from jsonschema.exceptions import best_match

    base = validators.validator_for(schema, default=validators.Draft202012Validator)
    # A registry with no retrieve function: an unknown URI is Unresolvable, never fetched.
    validator = _validator_class(base)(schema, registry=referencing.Registry())
    try:
        error = best_match(validator.iter_errors(answer))
    except referencing.exceptions.Unresolvable as exc:
        raise _refuse(f"cannot resolve a reference in the schema: {_quote(str(exc))}") from None
    except RecursionError:
        raise _refuse("the schema's references loop without end") from None
    if error is not None:
        raise _refuse("the ranking cannot follow response_format.json_schema: the content is a RankResponse "
                      f"(see /openapi.json); {error.message}")


async def _off_loop(fn: Callable[..., None], *args: Any) -> None:
    allowed = MIN_EVALUATIONS + EVALUATIONS_PER_VALUE * _values(args[-1])  # the value checked is the last argument

    def run() -> None:
        _deadline.set(time.monotonic() + TIME_LIMIT_S)
        _budget.set([allowed, allowed])
        fn(*args)

    try:
        await asyncio.wait_for(asyncio.to_thread(run), timeout=TIME_LIMIT_S + 0.5)
    except _OutOfTime as exc:
        if exc.evaluations is not None:
            raise _refuse(f"the schema is too complex to apply: more than {exc.evaluations} keyword evaluations "
                          f"({EVALUATIONS_PER_VALUE} per JSON value checked, at least {MIN_EVALUATIONS}); "
                          "simplify it (nested anyOf/oneOf over shared references multiply)") from None
        what = f"the pattern {_quote(exc.pattern)}" if exc.pattern else "the schema"
        raise _refuse(f"{what} took too long to apply (limits: {REGEX_TIMEOUT_S * 1000:.0f} ms per pattern match, "
                      f"{TIME_LIMIT_S:g} s in all); simplify it") from None
    except TimeoutError as exc:
        pattern = getattr(exc, "pattern", None)
        what = f"the pattern {_quote(pattern)}" if pattern else "the schema"
        raise _refuse(f"{what} took too long to apply (limits: {REGEX_TIMEOUT_S * 1000:.0f} ms per pattern match, "
                      f"{TIME_LIMIT_S:g} s in all); simplify it") from None
    except InvalidRequestError:
        raise
    except RecursionError:
        raise _refuse("the schema's references loop without end") from None
    except Exception as exc:  # noqa: BLE001 - whatever a client's schema makes jsonschema raise is its 400
        raise _refuse(f"the schema cannot be applied ({type(exc).__name__})") from None


async def check_schema(schema: Any) -> dict[str, Any] | bool:
    """The schema, once it is known to be local, bounded and valid JSON Schema (else a 400)."""
    inspect_schema(schema)
    await _off_loop(_check, schema)
    return schema


async def validate_answer(schema: dict[str, Any] | bool, content: str) -> None:
    """A 400 naming the field if ``content`` (the answer JSON) does not follow ``schema``."""
    await _off_loop(_validate, schema, json.loads(content))
