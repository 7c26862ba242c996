"""``llm-rec``: the command-line door into the pipeline. One module per command."""

from __future__ import annotations

import sys

import typer

from ..errors import RecommenderError

app = typer.Typer(
    name="llm-rec",
    help="Rank candidate items for a user with a locally hosted LLM; evaluate and serve it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module registers its command(s) on `app` when imported.
from . import batch, demo, eval, fit, rank, serve, serve_model, tune  # noqa: E402,F401


def main() -> None:
    """Entry point: typed errors become one readable line and exit code 2, never a traceback."""
    from pydantic import ValidationError

    from ..errors import from_validation_error

    try:
        app()
    except RecommenderError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except ValidationError as exc:
        if exc.title != "Settings":  # not a setting: a bug, keep its traceback
            raise
        # a bad LLM_REC_* variable (or .env line): name the setting and the variable that set it
        from ..settings import Settings

        err = from_validation_error(exc)
        config = Settings.model_config
        env = config.get("env_prefix", "") + (err.param or "").upper().replace(".", config.get("env_nested_delimiter") or ".")
        typer.secho(f"error: {err} (set by {env} in the environment or .env?)", err=True, fg="red")
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
