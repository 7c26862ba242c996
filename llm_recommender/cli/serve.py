"""``llm-rec serve``: the recommender as an OpenAI-compatible HTTP server."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from . import app
from .common import RecommenderOptions, make_recommender, recommender_kwargs, recommender_options


@app.command()
@recommender_options(service=True)
def serve(
    opts: RecommenderOptions,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: 8000).")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", help="Require 'Authorization: Bearer KEY' on /v1/* (default: env LLM_REC_SERVER_API_KEY, else none).",
        show_default=False)] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Model id clients send (default: the model's name).")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Rankings running at once (default: 1).")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Requests waiting beyond those; more get 429 (default: 64).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Queued requests ranked together in one batch (default: 8; 1: one at a time).")] = None,
    batch_wait_ms: Annotated[float | None, typer.Option(help="A free slot waits this long for more requests to batch (default: 5).")] = None,
    max_body_bytes: Annotated[int | None, typer.Option(help="Larger bodies get 413 (default: 1048576).")] = None,
    max_candidates: Annotated[int | None, typer.Option(help="More candidates get 400 (default: 100).")] = None,
    graceful_timeout: Annotated[float | None, typer.Option(help="SIGTERM: seconds to finish in-flight requests (default: 30).")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug | info | warning | error (default: info).")] = None,
) -> None:
    """Serve /v1/models, /v1/chat/completions, /v1/recommendations, /health and /metrics."""
    from ..backends import AUTO, backend_class
    from ..scorers import strategy_class
    from ..server import ServerSettings, run_server
    from ..settings import Settings

    settings = ServerSettings(**recommender_kwargs(
        host=host, port=port, api_key=api_key, served_model_name=served_model_name, max_concurrency=max_concurrency,
        max_queue=max_queue, max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_body_bytes=max_body_bytes, max_candidates=max_candidates,
        graceful_timeout_s=graceful_timeout, log_level=log_level))
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    kwargs = opts.settings()
    # Fail fast on typos before the (slow) model load starts in the background.
    core = Settings(**{k: v for k, v in kwargs.items() if k != "calibrator"})
    if core.backend != AUTO:
        backend_class(core.backend)
    if opts.bundle is None:
        strategy_class(core.strategy)
    else:
        from ..bundle import read_manifest

        read_manifest(opts.bundle)  # a missing or broken bundle fails here, not in the background load
    if opts.calibrator is not None and not opts.calibrator.is_file():
        raise typer.BadParameter(f"{opts.calibrator} does not exist", param_hint="--calibrator")
    run_server(lambda: make_recommender(opts.bundle, **kwargs), settings)
