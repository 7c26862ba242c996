"""``llm-rec eval``: run the evaluation harness and write results.json, report.md and plots."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import app
from .common import BackendOpt, ModelOpt, ThreadsOpt, recommender_kwargs, with_options


def _opt(kind: Any, help: str, *flags: str) -> Any:
    return Annotated[kind, typer.Option(*flags, help=help)]


# The options, in --help order: name -> (type and help, default). Each is an EvalConfig field of the same name
# (pydantic parses the comma-separated lists), except fit_config (JSON, parsed below); None leaves EvalConfig's default.
OPTIONS: dict[str, tuple[Any, Any]] = {
    "dataset": (_opt(str, "ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic."), "ml-latest-small"),
    "data_dir": (_opt(Path | None, "Folder with the dataset's files [default: the bundled copy, ml-latest-small only]."), None),
    "protocol": (_opt(str, "llmrank: the ground truth + (--n-candidates - 1) random negatives per user (the published "
                      "LLMRank protocol: 19); cold-start: targets and candidates are items kept out of training."), "llmrank"),
    "n_candidates": (_opt(int, "Candidates per request: the ground truth and n-1 sampled negatives."), 20),
    "users": (_opt(int, "Users sampled with --seed; each gives one validation and one test case."), 200),
    "seed": (_opt(int, "Seed for the user sample and the candidate sets."), 0),
    "scorers": (_opt(str | None, "Comma-separated strategies of one registry: fused (the bundle), its components (popularity, cooccurrence, itemknn, als, bpr, embedding, representation, sequence), random, and the LLM strategies verbalizer, pointwise, listwise."), None),
    "out": (_opt(Path, "Output folder (results.json, report.md, *.png, calibrators/, cache/)."), Path("eval/runs/latest")),
    "backend": (BackendOpt, None),
    "model": (ModelOpt, None),
    "threads": (ThreadsOpt, None),
    "calibrators": (_opt(str, "Comma-separated calibrators fitted on the validation cases and applied to test: platt, temperature, isotonic."), "platt,temperature,isotonic"),
    "calibration_protocol": (_opt(str, "Where probabilities are calibrated and scored: llmrank (each candidate, label 1 = ground truth), likes (the target alone, label = rating > 3), or both."), "both"),
    "position_bias": (_opt(bool, "Also sweep the ground truth over every position (verbalizer, listwise), without and with permutation averaging.", "--position-bias"), False),
    "position_strategies": (_opt(str, "Comma-separated LLM strategies swept for position bias: verbalizer, listwise (pointwise has no candidate position)."), "verbalizer,listwise"),
    "position_points": (_opt(int | None, "Sweep only N evenly spaced positions, first and last included [default: every position]."), None),
    "position_users": (_opt(int, "Test users in the position-bias sweep."), 10),
    "listwise_position_users": (_opt(int | None, "Test users in the listwise sweep [default: --position-users]."), None),
    "sweep_permutations": (_opt(int, "Orders averaged for the sweep's 'with averaging' curve."), 3),
    "permutations": (_opt(int, "Candidate orders averaged per LLM request in the main run (1 = as sampled)."), 1),
    "exclude_history": (_opt(bool, "Keep the user's past items out of the negatives (not the published protocol).", "--exclude-history"), False),
    "max_history": (_opt(int, "History items per case (the protocol uses 50; fewer makes LLM prompts shorter)."), 50),
    "llm_history": (_opt(int | None, "LLM prompts show only the most recent N history items [default: --max-history]; baselines keep the full history."), None),
    "llm_users": (_opt(int | None, "Score the LLM strategies on the first N sampled users only (CPU budgets); stated in the report."), None),
    "listwise_users": (_opt(int | None, "Score listwise on the first N sampled users only."), None),
    "bundle": (_opt(Path | None, "Evaluate this fitted bundle [default: fit one on the training split into OUT/bundle, reused by reruns]."), None),
    "fit_components": (_opt(str | None, "Components the run's own fit trains [default: all available]; the fit keeps those that help."), None),
    "fit_config": (_opt(str | None, 'JSON of per-component configs for the fit, e.g. \'{"sequence": {"model": {"loss": "sampled"}}}\'.'), None),
    "fit_valid_users": (_opt(int, "Validation cases of the run's own fit: every component is scored on them and the fusion fitted on them (fewer: a faster fit where a component runs the LLM per request)."), 2000),
    "cold_share": (_opt(float, "cold-start protocol: share of the items kept out of training (seeded)."), 0.1),
    "batch_size": (_opt(int, "LLM requests per batch; each finished batch is appended to OUT/cache."), 8),
    "stop_after": (_opt(int | None, "Stop after N new LLM requests (to test resuming); rerun to continue."), None),
    "progress": (_opt(bool, "Show progress bars with ETA."), True),
}


@app.command("eval")
@with_options(OPTIONS, into="options")
def eval_command(options: dict[str, Any]) -> None:
    """Fit (or load) a bundle and evaluate it and every scorer through the served pipeline; calibrators are fitted on validation only.

    Writes OUT/results.json (every metric per scorer plus the run record), OUT/report.md
    and PNG plots. LLM outputs are cached in OUT/cache, so an interrupted run resumes
    and a rerun is instant.
    """
    from pydantic import ValidationError

    from ..errors import UnknownNameError, from_validation_error
    from ..evaluation.runner import PROTOCOLS, EvalConfig, EvalRunner, RunStopped

    if options["protocol"] not in PROTOCOLS:
        raise UnknownNameError("protocol", options["protocol"], PROTOCOLS, param="protocol")
    fit_config = options.pop("fit_config")
    try:
        config = EvalConfig(**recommender_kwargs(**options), fit_component_config=json.loads(fit_config) if fit_config else {},
                            command="llm-rec " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    out = config.out
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
