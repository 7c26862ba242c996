"""``llm-rec eval``: run the evaluation harness and write results.json, report.md and plots."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import BackendOpt, ModelOpt, ThreadsOpt


@app.command("eval")
def eval_command(
    dataset: Annotated[
        str, typer.Option(help="ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic.")
    ] = "ml-latest-small",
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with the dataset's files [default: the bundled copy, ml-latest-small only]."),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(help="llmrank: the ground truth + (--n-candidates - 1) random negatives per user (the published "
                     "LLMRank protocol: 19); cold-start: targets and candidates are items kept out of training."),
    ] = "llmrank",
    n_candidates: Annotated[
        int, typer.Option(help="Candidates per request: the ground truth and n-1 sampled negatives.")
    ] = 20,
    users: Annotated[
        int, typer.Option(help="Users sampled with --seed; each gives one validation and one test case.")
    ] = 200,
    seed: Annotated[int, typer.Option(help="Seed for the user sample and the candidate sets.")] = 0,
    scorers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated strategies of one registry: fused (the bundle), its components (popularity, cooccurrence, itemknn, als, bpr, embedding, representation, sequence), random, and the LLM strategies verbalizer, pointwise, listwise."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Output folder (results.json, report.md, *.png, calibrators/, cache/).")
    ] = Path("eval/runs/latest"),
    backend: BackendOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    calibrators: Annotated[
        str,
        typer.Option(
            help="Comma-separated calibrators fitted on the validation cases and applied to test: platt, temperature, isotonic."
        ),
    ] = "platt,temperature,isotonic",
    calibration_protocol: Annotated[
        str,
        typer.Option(
            help="Where probabilities are calibrated and scored: llmrank (each candidate, label 1 = ground truth), likes (the target alone, label = rating > 3), or both."
        ),
    ] = "both",
    position_bias: Annotated[
        bool,
        typer.Option(
            "--position-bias",
            help="Also sweep the ground truth over every position (verbalizer, listwise), without and with permutation averaging.",
        ),
    ] = False,
    position_strategies: Annotated[
        str,
        typer.Option(
            help="Comma-separated LLM strategies swept for position bias: verbalizer, listwise (pointwise has no candidate position)."
        ),
    ] = "verbalizer,listwise",
    position_points: Annotated[
        int | None,
        typer.Option(help="Sweep only N evenly spaced positions, first and last included [default: every position]."),
    ] = None,
    position_users: Annotated[int, typer.Option(help="Test users in the position-bias sweep.")] = 10,
    listwise_position_users: Annotated[
        int | None, typer.Option(help="Test users in the listwise sweep [default: --position-users].")
    ] = None,
    sweep_permutations: Annotated[
        int, typer.Option(help="Orders averaged for the sweep's 'with averaging' curve.")
    ] = 3,
    permutations: Annotated[
        int, typer.Option(help="Candidate orders averaged per LLM request in the main run (1 = as sampled).")
    ] = 1,
    exclude_history: Annotated[
        bool,
        typer.Option(
            "--exclude-history", help="Keep the user's past items out of the negatives (not the published protocol)."
        ),
    ] = False,
    max_history: Annotated[
        int, typer.Option(help="History items per case (the protocol uses 50; fewer makes LLM prompts shorter).")
    ] = 50,
    llm_history: Annotated[
        int | None,
        typer.Option(
            help="LLM prompts show only the most recent N history items [default: --max-history]; baselines keep the full history."
        ),
    ] = None,
    llm_users: Annotated[
        int | None,
        typer.Option(
            help="Score the LLM strategies on the first N sampled users only (CPU budgets); stated in the report."
        ),
    ] = None,
    listwise_users: Annotated[
        int | None, typer.Option(help="Score listwise on the first N sampled users only.")
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Evaluate this fitted bundle [default: fit one on the training split into OUT/bundle, reused by reruns]."),
    ] = None,
    fit_components: Annotated[
        str | None,
        typer.Option(help="Components the run's own fit trains [default: all available]; the fit keeps those that help."),
    ] = None,
    fit_config: Annotated[
        str | None,
        typer.Option(help='JSON of per-component configs for the fit, e.g. \'{"sequence": {"model": {"loss": "sampled"}}}\'.'),
    ] = None,
    cold_share: Annotated[
        float, typer.Option(help="cold-start protocol: share of the items kept out of training (seeded).")
    ] = 0.1,
    batch_size: Annotated[
        int, typer.Option(help="LLM requests per batch; each finished batch is appended to OUT/cache.")
    ] = 8,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop after N new LLM requests (to test resuming); rerun to continue.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars with ETA.")] = True,
) -> None:
    """Fit (or load) a bundle and evaluate it and every scorer through the served pipeline; calibrators are fitted on validation only.

    Writes OUT/results.json (every metric per scorer plus the run record), OUT/report.md
    and PNG plots. LLM outputs are cached in OUT/cache, so an interrupted run resumes
    and a rerun is instant.
    """
    from pydantic import ValidationError

    from ..errors import UnknownNameError, from_validation_error
    from ..evaluation.runner import PROTOCOLS, EvalConfig, EvalRunner, RunStopped

    if protocol not in PROTOCOLS:
        raise UnknownNameError("protocol", protocol, PROTOCOLS, param="protocol")
    try:
        config = EvalConfig(
            dataset=dataset,
            data_dir=data_dir,
            protocol=protocol,
            n_candidates=n_candidates,
            users=users,
            seed=seed,
            scorers=scorers or [],  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
            out=out,
            backend=backend,
            model=model,
            threads=threads,
            calibrators=calibrators,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
            calibration_protocol=calibration_protocol,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
            position_bias=position_bias,
            position_strategies=position_strategies,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
            position_users=position_users,
            position_points=position_points,
            listwise_position_users=listwise_position_users,
            sweep_permutations=sweep_permutations,
            permutations=permutations,
            exclude_history=exclude_history,
            max_history=max_history,
            llm_history=llm_history,
            llm_users=llm_users,
            listwise_users=listwise_users,
            bundle=bundle,
            fit_components=fit_components,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
            fit_component_config=json.loads(fit_config) if fit_config else {},
            cold_share=cold_share,
            batch_size=batch_size,
            stop_after=stop_after,
            progress=progress,
            command="llm-rec " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    runner = EvalRunner(config)
    try:
        results = runner.run()
    except RunStopped as exc:
        typer.secho(str(exc), err=True)
        raise typer.Exit(3) from None
    scorers_out = results["sets"]["llmrank"]["scorers"]
    for name, entry in scorers_out.items():
        typer.echo(f"{name:>16}  NDCG@10 {entry['ranking']['ndcg@10']:.4f}  (users {entry['users']})")
    typer.echo(f"wrote {out / 'results.json'}, {out / 'report.md'}")
    if results.get("plots"):
        typer.echo("plots: " + ", ".join(str(out / name) for name in results["plots"]))
