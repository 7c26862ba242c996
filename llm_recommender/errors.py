"""Typed errors shared by the Python API, the CLI and the server.

Every error knows its HTTP status, an OpenAI-style ``type``/``code`` and the offending
parameter (``param``), so each door maps errors in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class RecommenderError(Exception):
    """Base of all project errors."""

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __str__(self) -> str:  # shown by the CLI
        return f"{self.message} (field: {self.param})" if self.param else self.message


# ---- client errors (4xx): the caller sent something we cannot use -----------------


class ClientError(RecommenderError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequestError(ClientError):
    """A request field is missing, has the wrong type or an impossible value."""


class TooManyCandidatesError(ClientError):
    code = "too_many_candidates"


class UnknownNameError(ClientError):
    """An unknown strategy/backend/calibrator/... name; the message lists the valid ones."""

    code = "unknown_name"

    def __init__(self, kind: str, name: str, valid: Iterable[str], *, param: str | None = None):
        self.valid = sorted(valid)
        super().__init__(
            f"unknown {kind} {name!r}; valid {kind} names: {', '.join(self.valid)}",
            param=param or kind,
        )


class InputDecodeError(ClientError):
    """Input bytes that are not valid UTF-8 or not valid JSON."""

    code = "invalid_input"


class BundleError(ClientError):
    """A bundle is missing, incomplete, corrupt, or does not match the model/templates in use."""

    code = "invalid_bundle"

    def __init__(self, message: str, *, param: str = "bundle", **extra: Any) -> None:
        super().__init__(message, param=param, **extra)


# ---- server-side errors (5xx): the model or backend failed ------------------------


class ModelLoadError(RecommenderError):
    code = "model_load_failed"


class BackendError(RecommenderError):
    status_code = 502
    code = "backend_error"


class CapabilityError(BackendError):
    """The backend cannot do what the strategy needs (e.g. no logprobs)."""

    code = "capability_missing"


def pydantic_loc_to_param(loc: tuple[Any, ...]) -> str:
    """('candidates', 3, 'title') -> 'candidates[3].title'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def from_validation_error(exc: Any, prefix: str | None = None) -> InvalidRequestError:
    """Turn a pydantic ``ValidationError`` into an ``InvalidRequestError`` naming the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    param = pydantic_loc_to_param(((prefix,) if prefix else ()) + loc) or None
    msg = first.get("msg", "invalid value")
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequestError(
        f"invalid {param or 'request'}: {msg}{extra}",
        param=param,
        errors=[{"param": pydantic_loc_to_param(tuple(e.get("loc", ()))), "msg": e.get("msg")} for e in errors],
    )
