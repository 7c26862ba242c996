"""The FastAPI app and the uvicorn runner used by ``llm-rec serve``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ModelLoadError, RecommenderError
from ..recommender import Recommender
from .config import ServerSettings
from .errors import error_response
from .guard import RequestGuard
from .prometheus import Metrics, MetricsMiddleware
from .router import router
from .serving import RecommenderServing

log = logging.getLogger(__name__)


def create_app(recommender: Recommender | Callable[[], Recommender], settings: ServerSettings | None = None,
               on_load_failure: Callable[[BaseException], None] | None = None) -> FastAPI:
    """An app serving ``recommender`` (or the factory that loads it, run in the background at startup)."""
    settings = settings or ServerSettings()
    metrics = Metrics()
    serving = RecommenderServing(settings, metrics, recommender, on_load_failure)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await serving.start()
        try:
            yield
        finally:
            await serving.stop()

    app = FastAPI(
        title="llm-recommender",
        version=__version__,
        description="Rank candidate items for a user with an LLM. OpenAI-compatible (/v1/models, "
                    "/v1/chat/completions) and native (/v1/recommendations).",
        lifespan=lifespan,
    )
    app.state.serving = serving
    app.include_router(router)

    async def handle(request: Request, exc: Exception):  # the one mapping lives in error_response
        return error_response(exc)

    for exc_type in (RecommenderError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, handle)
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(RequestGuard, api_key=key, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: also counts the guard's refusals
    return app


class QueryStringFilter(logging.Filter):
    """Drops the query string from request targets in log records: a client may put a secret
    there (``?api_key=...``), and uvicorn's access log writes the full target."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(_without_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def _without_query(text: str) -> str:
    # A request target (starts with '/', or is absolute) keeps its path only.
    if text.startswith("/") or "://" in text:
        return text.split("?", 1)[0]
    return text


def redact_query_strings() -> None:
    """Install :class:`QueryStringFilter` on uvicorn's loggers (idempotent). The project's own
    code never logs a request target."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStringFilter) for f in logger.filters):
            logger.addFilter(QueryStringFilter())


def uvicorn_config(app: FastAPI, settings: ServerSettings) -> Any:
    """The uvicorn config ``llm-rec serve`` runs with; query strings never reach its logs."""
    import uvicorn

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # pyright: ignore[reportArgumentType]  (a float works)
        server_header=False,
    )
    redact_query_strings()  # after Config: it (re)configures uvicorn's loggers
    return config


def run_server(recommender: Recommender | Callable[[], Recommender], settings: ServerSettings) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn then stops accepting and finishes in-flight requests
    (up to ``graceful_timeout_s``). A model that fails to load stops the server with ModelLoadError."""
    import uvicorn

    server: uvicorn.Server | None = None

    def load_failed(exc: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(recommender, settings, on_load_failure=load_failed)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.run()
    error = app.state.serving.load_error
    if error is not None:
        raise ModelLoadError(f"the server stopped because the model failed to load: {error}", param="model")
