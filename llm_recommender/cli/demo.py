"""``llm-rec demo``: rank movies for a user of the bundled MovieLens sample, with reasons."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from . import app
from .common import BackendOpt, ModelOpt, StrategyOpt, ThreadsOpt, recommender_kwargs


@app.command()
def demo(
    user: Annotated[str, typer.Option(help="userId in the bundled ml-latest-small sample.")] = "1",
    candidates: Annotated[int, typer.Option(help="Number of candidates (held-out movie + random unseen ones).")] = 20,
    history: Annotated[int, typer.Option(help="History length (most recent ratings before the held-out one).")] = 50,
    top_k: Annotated[int, typer.Option(help="Ranked items to show, each with a reason.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for sampling the candidates.")] = 0,
    model: ModelOpt = None,
    backend: BackendOpt = None,
    strategy: StrategyOpt = None,
    threads: ThreadsOpt = None,
) -> None:
    """Rank candidates for a MovieLens user with the embedded default model and print a table with reasons."""
    from rich.console import Console
    from rich.table import Table

    from ..recommender import Recommender

    console = Console()
    from ..sample_data import sample_request

    request, target = sample_request(user, candidates, history, seed, top_k)
    with console.status("loading the model (the first run converts the embedded default once, ~30 s)"):
        rec = Recommender(**recommender_kwargs(model=model, backend=backend, strategy=strategy, threads=threads))
    start = time.perf_counter()
    with console.status(f"ranking {candidates} candidates for user {user}"):
        response = rec.rank_request(request)
    elapsed = time.perf_counter() - start

    console.print(f"[bold]User {user}[/bold]: last {min(3, len(request['history']))} of {response.history_used} history items used:")
    for h in request["history"][-3:]:
        console.print(f"  • {h['title']}  (rated {h['rating']:g})")
    table = Table(title=f"Top {top_k} of {candidates} candidates — {response.strategy} on {response.model} ({response.backend})")
    table.add_column("#", justify="right")
    table.add_column("movie")
    table.add_column("P(like)", justify="right")
    table.add_column("reason")
    for it in response.items:
        mark = " [green](held-out)[/green]" if it.id == target else ""
        table.add_row(str(it.rank), it.title + mark, f"{it.probability:.3f}", it.reason or "[dim]-[/dim]")
    console.print(table)
    in_top = any(it.id == target for it in response.items)
    console.print(
        f"held-out movie: {request['candidates'][[c['id'] for c in request['candidates']].index(target)]['title']}"
        f" — {'in' if in_top else 'not in'} the top {top_k}. {elapsed:.1f} s; "
        f"fallback used: {response.fallback_used}."
    )
    for note in response.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
