"""``llm-rec batch INPUT OUT/``: rank users offline on Ray Data (or in-process), resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import RecommenderOptions, recommender_options


@app.command()
@recommender_options(service=True, bundle_help="Fitted bundle folder (Recommender.load); its model unless --model; "
                     "--backend, --threads etc. still apply.")
def batch(
    input: Annotated[Path | None, typer.Argument(help="Users as .jsonl or .parquet: user_id, history, optional candidates and top_k.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Argument(help="Output folder of part files; a rerun skips users already written.", show_default=False)] = None,
    output_format: Annotated[str, typer.Option(help="jsonl | parquet.")] = "jsonl",
    catalog: Annotated[Path | None, typer.Option(help="Candidates (.jsonl/.parquet items) for rows without their own.")] = None,
    top_k: Annotated[int, typer.Option(help="Ranked items per user (rows may set their own top_k).")] = 10,
    reasons: Annotated[bool, typer.Option(help="Add a reason to each ranked item.")] = False,
    batch_size: Annotated[int, typer.Option(help="Users per rank_many call and per part file.")] = 16,
    limit: Annotated[int | None, typer.Option(help="Only the first N input rows.")] = None,
    ray: Annotated[bool, typer.Option("--ray/--no-ray", help="Ray Data actors, or a plain in-process loop.")] = True,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster (default: start a local Ray for the job).")] = None,
    num_workers: Annotated[int, typer.Option(help="Ray actors, each holding one Recommender.")] = 2,
    cpus_per_worker: Annotated[float, typer.Option(help="CPUs per actor (fractions allowed, e.g. 0.5).")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per actor (fractions allowed).")] = 0.0,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
    cleanup: Annotated[bool, typer.Option("--cleanup", help="Only end the Ray processes left by batch drivers that were killed (each local run also does this first), then exit.")] = False,
    *,
    opts: RecommenderOptions,
) -> None:
    """Rank every user of INPUT and write one ranked list (or an error) per user under OUTPUT."""
    from ..batch import BatchConfig, RecommenderSpec, run_batch
    from ..errors import InvalidRequestError
    from ..settings import Settings

    if cleanup:
        from ..ray_cluster import cleanup_ray

        ended = cleanup_ray()
        typer.echo(f"ended {len(ended)} Ray process(es) left by killed batch drivers" + (f": {', '.join(map(str, ended))}" if ended else ""))
        return
    if input is None or output is None:
        raise InvalidRequestError("batch needs INPUT and OUTPUT (or --cleanup)", param="output" if input else "input")

    config = BatchConfig(input=input, output=output, output_format=output_format, catalog=catalog, top_k=top_k,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
                         reasons=reasons, strategy=opts.strategy, batch_size=batch_size, limit=limit, use_ray=ray,
                         address=address, num_workers=num_workers, cpus_per_worker=cpus_per_worker,
                         gpus_per_worker=gpus_per_worker, progress=not quiet)
    # Each worker resolves "auto" on its own hardware: the vLLM engine on a GPU worker, transformers on CPU.
    kwargs = opts.settings(with_strategy=False)
    if opts.bundle is None:
        Settings(**{k: v for k, v in kwargs.items() if k != "calibrator"})  # typos fail before Ray starts
    summary = run_batch(config, RecommenderSpec(bundle=opts.bundle, kwargs=kwargs))
    typer.echo(summary.model_dump_json())
    typer.secho(f"{summary.ranked + summary.errors} users in {summary.seconds:.1f} s: {summary.users_per_s:.2f} users/s "
                f"({summary.ranked} ranked, {summary.errors} errors, {summary.skipped} already written; "
                f"{summary.executor}, first batch after {summary.startup_seconds:.1f} s)", err=True)
