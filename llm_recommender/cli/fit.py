"""``llm-rec fit``: train every component of a recommender once and write the bundle folder."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import ModelOpt, ThreadsOpt

GENERIC_FORMAT = """Your own data: --dataset generic --data-dir DIR, with two files in DIR.

interactions.csv (or .jsonl): user_id, item_id; optional timestamp (unix seconds or ISO-8601, on every row or on
none: without it the file order is each user's time order) and rating (a number, may be blank).

items.csv (or .jsonl): item_id, title; optional text (a description) and genres (Fiction|Classic in CSV, a JSON list
in JSONL). Every interaction must name an item of items.csv; ids are strings or integers.

Example: items.csv holds the header item_id,title,text,genres and a row a,Alpha,A long story,Fiction|Classic;
interactions.csv holds user_id,item_id,timestamp,rating and u1,a,10,4.

The full format, with a JSON Lines example: docs/data.md."""


@app.command("fit", epilog=GENERIC_FORMAT)
def fit_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write (replaced atomically when the fit completes).")],
    dataset: Annotated[str, typer.Option(help="ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic.")] = "ml-latest-small",
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the dataset's files [default: the bundled copy, ml-latest-small only].")] = None,
    components: Annotated[str | None, typer.Option(help="Comma-separated components to fit (default: all available); the fit keeps those that help on validation.")] = None,
    model: ModelOpt = None,
    valid_users: Annotated[int, typer.Option(help="Validation cases (one per sampled user) the fusion is fitted on.")] = 2000,
    min_gain: Annotated[float, typer.Option(help="Validation NDCG@10 a component must add to stay in the fusion.")] = 0.002,
    seed: Annotated[int, typer.Option(help="Seed for sampling, initialisation and the reference items.")] = 0,
    threads: ThreadsOpt = None,
    item_words: Annotated[str | None, typer.Option(help="What reasons call the items: movie | product | book | item | 'noun/verb' (default: the dataset's own; generic: item).")] = None,
    config: Annotated[str | None, typer.Option(help='JSON of per-component configs, e.g. \'{"sequence": {"model": {"epochs": 10}}}\'.')] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Compute the LLM item vectors on Ray Data and train the sequence model data-parallel on Ray Train: 'local' starts a local Ray cluster (--ray-workers x --ray-cpus-per-worker CPUs) for each of these steps and stops it after; an address (host:6379, or auto) joins that running cluster. Everything else runs in this process. Needs the [batch] extra. See docs/fit-on-ray.md. [default: no Ray, one process]", show_default=False)] = None,
    ray_workers: Annotated[int, typer.Option("--ray-workers", min=1, help="Ray actors computing item vectors (each loads the LLM once); Ray Train workers of the sequence model.")] = 2,
    ray_cpus_per_worker: Annotated[float, typer.Option("--ray-cpus-per-worker", min=0.01, help="CPUs each Ray worker reserves; its torch threads (at least 1).")] = 1.0,
    ray_gpus_per_worker: Annotated[float, typer.Option("--ray-gpus-per-worker", min=0.0, help="GPUs each Ray worker reserves (0: CPU workers).")] = 0.0,
) -> None:
    """Fit a recommender on the training split (no validation or test target is seen) and write BUNDLE.

    Prints each component's fit time and validation NDCG@10, which components the fusion keeps and why.
    """
    from ..bundle.fit import DEFAULT_COMPONENTS, FitConfig, available_components, fit_bundle

    names = components.split(",") if components else available_components(list(DEFAULT_COMPONENTS))
    cfg = FitConfig(dataset=dataset, data_dir=data_dir, components=names, valid_users=valid_users, min_gain=min_gain,
                    seed=seed, threads=threads, item_words=item_words, ray_address=ray_address, ray_workers=ray_workers,
                    ray_cpus_per_worker=ray_cpus_per_worker, ray_gpus_per_worker=ray_gpus_per_worker, component_config=json.loads(config) if config else {}, command="llm-rec " + shlex.join(sys.argv[1:]),
                    **({"model": model} if model else {}))  # pyright: ignore[reportArgumentType]  (one optional str)
    path = fit_bundle(cfg, out)
    typer.echo(str(path))
