"""``llm-rec demo``: fit a recommender on the bundled MovieLens sample once, then rank movies for a user."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from ..bundle.demo import demo_bundle
from . import app
from .common import BackendOpt, BundleOpt, ModelOpt, StrategyOpt, ThreadsOpt, recommender_kwargs


@app.command()
def demo(
    user: Annotated[str, typer.Option(help="userId in the bundled ml-latest-small sample (1..610).")] = "1",
    candidates: Annotated[int, typer.Option(help="Candidates: the user's held-out last movie + random others.")] = 20,
    top_k: Annotated[int, typer.Option(help="Ranked items to show.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for sampling the candidates.")] = 0,
    bundle: BundleOpt = None,
    strategy: StrategyOpt = None,
    reasons: Annotated[str, typer.Option(help="evidence: a reason rendered from what carried each item (no LLM, the default); llm: the LLM phrases it (seconds per item on a CPU); none.")] = "evidence",
    model: ModelOpt = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    catalogue: Annotated[int | None, typer.Option(help="Instead of sampled candidates: recommend the top N of the whole catalogue.")] = None,
) -> None:
    """Rank movies for a MovieLens user with a fitted recommender and show what carried each item's score."""
    from rich.console import Console
    from rich.table import Table

    from ..data import load_dataset
    from ..data.splits import leave_one_out, llmrank_cases
    from ..recommender import Recommender

    console = Console()
    path = bundle or demo_bundle(lambda m: console.print(m, highlight=False))
    rec = Recommender.load(path, **recommender_kwargs(model=model, backend=backend, strategy=strategy, threads=threads))
    ds = load_dataset("ml-latest-small")
    splits = leave_one_out(ds)
    if user not in splits:
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"user {user!r} is not in the sample (ids 1..{len(splits)})", param="user")
    case = llmrank_cases(ds, split="test", users=[user], n_candidates=candidates, seed=seed, splits=splits)[0]
    if reasons not in ("evidence", "llm", "none"):
        from ..errors import InvalidRequestError

        raise InvalidRequestError(f"--reasons must be evidence, llm or none, not {reasons!r}", param="reasons")
    request = case.request.model_copy(update={"top_k": top_k, "reasons": False if reasons == "none" else reasons,
                                              "candidates": [] if catalogue else case.request.candidates})
    start = time.perf_counter()
    response = rec.rank_request(request)
    elapsed = time.perf_counter() - start

    console.print(f"[bold]User {user}[/bold]: {len(request.history)} history items, the most recent:")
    for h in request.history[-3:]:
        console.print(f"  • {h.title}  (rated {h.rating:g})")
    source = f"the whole catalogue ({len(rec.bundle.space)} movies)" if catalogue else f"{candidates} candidates"
    table = Table(title=f"Top {top_k} of {source} — {response.strategy} ({', '.join(rec.bundle.describe()['components'])})")
    table.add_column("#", justify="right")
    table.add_column("movie")
    table.add_column("P(like)", justify="right")
    table.add_column("why (and what carried it)")
    for it in response.items:
        mark = " [green](held-out)[/green]" if it.id == case.target_item_id else ""
        why = "\n".join(x for x in (it.reason, f"[dim]{_carried(it)}[/dim]" if it.evidence else None) if x)
        table.add_row(str(it.rank), it.title + mark, f"{it.probability:.3f}", why or "[dim]-[/dim]")
    console.print(table)
    target_title = ds.item(case.target_item_id).title
    in_top = any(it.id == case.target_item_id for it in response.items)
    console.print(f"held-out movie: {target_title} — {'in' if in_top else 'not in'} the top {top_k}. "
                  f"{elapsed * 1000:.0f} ms.")
    console.print(llm_part(rec.bundle.describe()["components"], rec.backend_name, rec.model_name), highlight=False)
    for note in response.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"bundle: {path}\nin Python: Recommender.load(demo_bundle()) loads it "
                  "(from llm_recommender import Recommender, demo_bundle)", highlight=False, soft_wrap=True)


def _carried(item) -> str:  # type: ignore[no-untyped-def]
    ev = item.evidence
    if ev is None or not ev.contributions:
        return ""
    parts = sorted(ev.contributions.items(), key=lambda kv: -abs(kv[1]))[:3]
    return ", ".join(f"{k} {v:+.2f}" for k, v in parts)


def llm_part(components: list[str], backend: str, model: str) -> str:
    """One true sentence on what the LLM did for this answer."""
    ranked = "llm_ranker" in components
    if ranked:
        head = ("The LLM ranked: llm_ranker (a fine-tuned copy of the LLM) is one of this bundle's components; "
                "'what carried it' shows its share of each score.")
    else:
        head = (f"The LLM did not rank: this bundle ranks with {', '.join(components)}, and no LLM runs for it. "
                "The trained LLM ranker is not in the demo: on ML-100K it ranks below the sequence model and the "
                "fusion drops it (docs/llm-ranker.md).")
    if backend != "none":
        return (f"{head} {model} ({backend}) was asked to phrase the reasons; one that does not hold is replaced "
                "by the evidence reason.")
    return f"{head} --reasons llm asks {model} to phrase the reasons."
