"""One input row -> one ranking request, and one ranked list (or error) -> one output row.

Input rows: ``user_id`` (string or int), ``history`` (list of HistoryEntry), optional
``candidates`` (list of Item; default: the job's catalogue minus the history, else what a
bundle retrieves), optional
``top_k``. Every problem with a row becomes an ``error`` in that row's output, naming the
field, so one bad row never stops the job.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequestError, RecommenderError
from ..protocol import Item, RankRequest, RankResponse, parse_request

ROW_FIELDS = ("user_id", "history", "candidates", "top_k")


def user_key(row: Any, index: int, seen: dict[str, int]) -> tuple[str, RecommenderError | None]:
    """The resume key of a row: its user id, or ``row:N`` when the id is missing, invalid or repeated."""
    if not isinstance(row, dict):
        return f"row:{index}", InvalidRequestError(f"row {index} must be an object, got {type(row).__name__}", param="row")
    uid = row.get("user_id")
    if isinstance(uid, int) and not isinstance(uid, bool):
        uid = str(uid)
    if not isinstance(uid, str) or not uid.strip():
        return f"row:{index}", InvalidRequestError(f"row {index}: user_id must be a non-empty string or integer",
                                                    param="user_id")
    if uid in seen:
        return f"row:{index}", InvalidRequestError(f"row {index}: duplicate user_id {uid!r} (first at row {seen[uid]})",
                                                    param="user_id")
    seen[uid] = index
    return uid, None


def output_key(out: dict[str, Any]) -> str:
    """The same key, read back from an output row (see :func:`user_key`)."""
    err = out.get("error")
    if out.get("user_id") is None or (err and (err.get("param") or "").startswith("user_id")):
        return f"row:{out['row']}"
    return out["user_id"]


def _clean(value: Any) -> Any:
    # Parquet stores optional struct fields as nulls (and maps as key/value pairs): drop them
    # so a row read from Parquet validates exactly like the same row read from JSONL.
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            return {k: _clean(v) for k, v in value if v is not None}
        return [_clean(v) for v in value]
    return value


def to_request(row: dict[str, Any], *, top_k: int, reasons: bool, strategy: str | None,
               catalog: list[Item] | None) -> RankRequest:
    """Validate a row into a request; errors name the row's field (``history[3].title``)."""
    unknown = sorted(set(row) - set(ROW_FIELDS))
    if unknown:
        raise InvalidRequestError(f"unknown field(s) {', '.join(unknown)}; a row has {', '.join(ROW_FIELDS)}",
                                  param=unknown[0])
    history = _clean(row.get("history"))
    if history is None:
        history = []
    if not isinstance(history, list):
        raise InvalidRequestError("history must be a list of items", param="history")
    candidates = _clean(row.get("candidates"))
    if candidates is None:
        if catalog is None:
            candidates = []  # a bundle's Recommender retrieves them; any other refuses, naming ``candidates``
        else:
            seen = {h.get("id") for h in history if isinstance(h, dict)}
            seen |= {str(i) for i in seen if isinstance(i, int)}
            candidates = [c.model_dump(exclude_none=True) for c in catalog if c.id not in seen]
    row_top_k = row.get("top_k")
    return parse_request({"history": history, "candidates": candidates,
                          "top_k": top_k if row_top_k is None else row_top_k,
                          "reasons": reasons, "strategy": strategy})


def error_dict(exc: RecommenderError) -> dict[str, Any]:
    return exc.to_dict()["error"]


def ok_row(user_id: str, index: int, response: RankResponse) -> dict[str, Any]:
    return {
        "user_id": user_id, "row": index,
        # evidence only where there is some (fused bundle rankings): an all-null column would not round-trip Parquet
        "items": [it.model_dump(exclude={"evidence"} if it.evidence is None else None) for it in response.items],
        "fallback_used": response.fallback_used, "notes": list(response.notes), "error": None,
    }


def error_row(user_id: str | None, index: int, exc: RecommenderError) -> dict[str, Any]:
    return {"user_id": user_id, "row": index, "items": [], "fallback_used": False, "notes": [],
            "error": error_dict(exc)}
