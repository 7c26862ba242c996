"""``llm-rec rank REQUEST.json``: rank one request and print the response JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputDecodeError, InvalidRequestError
from . import app
from .common import RecommenderOptions, recommender_options


def read_request(source: str) -> dict:
    """Read a JSON request from a file or '-' (stdin); errors name the file and position."""
    name = "<stdin>" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except FileNotFoundError:
        raise InvalidRequestError(f"request file {name} does not exist", param="request") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputDecodeError(f"{name} is not valid UTF-8 (byte {exc.start})", param="request") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDecodeError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", param="request") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"{name}: the request must be a JSON object", param="request")
    return data


@app.command()
@recommender_options()
def rank(
    request: Annotated[str, typer.Argument(help="Request JSON file ({history, candidates, top_k, reasons, strategy}; with --bundle candidates may be omitted), or - for stdin.")],
    opts: RecommenderOptions,
    indent: Annotated[int, typer.Option(help="JSON indentation of the output.")] = 2,
    table: Annotated[bool, typer.Option("--table", help="Print a readable table (rank, title, P, reason) instead of JSON.")] = False,
) -> None:
    """Rank the candidates of REQUEST for its user and print the response as JSON (or a table)."""
    from ..protocol import parse_request

    parsed = parse_request(read_request(request))  # validate before loading the model
    response = opts.make().rank_request(parsed)
    if not table:
        typer.echo(response.model_dump_json(indent=indent or None))
        return
    if response.basis != "history":  # say first what the list rests on (cold start: popularity alone)
        typer.echo(f"basis: {response.basis}")
    for it in response.items:
        typer.echo(f"{it.rank:>3}. {it.title}  P={it.probability:.2f}")
        if it.reason:
            typer.echo(f"     {it.reason}")
    for fb in response.fallbacks:
        typer.echo(f"note: {fb.stage} fell back to {fb.used}: {fb.reason}", err=True)
    if response.basis != "history":
        for note in response.notes:
            typer.echo(f"note: {note}", err=True)
