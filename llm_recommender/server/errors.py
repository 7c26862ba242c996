"""Errors only the server raises, and THE one place that maps any exception to a response.

Every error body has the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``.
The project's typed errors already know their status, type, code and param; framework
errors (FastAPI validation, Starlette 404/405) are converted to typed errors first, so
:func:`error_response` is the only function that decides what a client sees.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ClientError, InputDecodeError, InvalidRequestError, RecommenderError, pydantic_loc_to_param

log = logging.getLogger(__name__)


def _client_error(name: str, status_code: int, code: str) -> type[ClientError]:
    """A 4xx error the server alone raises: only its status and code differ."""
    return type(name, (ClientError,), {"status_code": status_code, "code": code, "__module__": __name__})


AuthenticationError = _client_error("AuthenticationError", 401, "invalid_api_key")
ModelNotFoundError = _client_error("ModelNotFoundError", 404, "model_not_found")
NotFoundError = _client_error("NotFoundError", 404, "not_found")
MethodNotAllowedError = _client_error("MethodNotAllowedError", 405, "method_not_allowed")
PayloadTooLargeError = _client_error("PayloadTooLargeError", 413, "request_too_large")


class _RetryLater(RecommenderError):
    """An error whose answer tells the client when to come back (``Retry-After``, seconds; None: no header)."""

    def __init__(self, message: str, *, retry_after: int | None = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusyError(_RetryLater):
    """The queue is full: come back later."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "server_busy"


class NotReadyError(_RetryLater):
    """The model is still loading (or failed to load)."""

    status_code = 503
    error_type = "server_error"
    code = "model_not_ready"


class ClientDisconnectedError(RecommenderError):
    """The client went away while its request waited; nobody reads the answer (nginx's 499)."""

    status_code = 499
    error_type = "invalid_request_error"
    code = "client_disconnected"


def from_request_validation(exc: RequestValidationError) -> ClientError:
    """FastAPI's body/query validation error -> the project's error naming the field."""
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        detail = ctx.get("error", "malformed JSON")
        return InputDecodeError(f"the request body is not valid JSON: {detail}", param="body")
    param = pydantic_loc_to_param(loc) or "body"
    if first.get("type") == "missing" and not loc:
        return InvalidRequestError("the request body is missing; send a JSON object", param="body")
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequestError(f"invalid {param}: {msg}{more}", param=param)


def as_recommender_error(exc: BaseException) -> RecommenderError:
    if isinstance(exc, RecommenderError):
        return exc
    if isinstance(exc, RequestValidationError):
        return from_request_validation(exc)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return NotFoundError("no such route; see /openapi.json", param=None)
        if exc.status_code == 405:
            return MethodNotAllowedError("method not allowed on this route; see /openapi.json", param=None)
        if exc.status_code == 400:
            return InvalidRequestError(str(exc.detail), param="body")
        err = ClientError(str(exc.detail)) if exc.status_code < 500 else RecommenderError(str(exc.detail))
        err.status_code = exc.status_code  # type: ignore[misc]
        return err
    log.exception("unhandled error", exc_info=exc)
    return RecommenderError("internal server error")


def error_response(exc: BaseException) -> JSONResponse:
    """The response for any exception: status, OpenAI error body, and Retry-After where it helps."""
    err = as_recommender_error(exc)
    headers: dict[str, str] = {}
    retry_after: Any = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    if isinstance(err, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(err.to_dict(), status_code=err.status_code, headers=headers)
