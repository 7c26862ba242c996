"""``llm-rec tune generative``: fine-tune a generative scorer (pointwise Yes/No or verbalizer; full or LoRA),
through accelerate (a GPU when present, bf16 autocast on AMX CPUs), from interactions before each user's
validation target. The representation head is fitted by ``llm-rec fit`` as a bundle component."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import ModelOpt, ThreadsOpt

tune_app = typer.Typer(help="Fine-tune a generative scorer (the representation head is part of `llm-rec fit`).", no_args_is_help=True)
app.add_typer(tune_app, name="tune")

DatasetOpt = Annotated[str, typer.Option(help="ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder with the dataset's files.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for sampling and initialisation.")]


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


@tune_app.command("generative")
def tune_generative(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint/, model/ (merged, loads with --model), log.jsonl.")],
    objective: Annotated[
        str, typer.Option(help="pointwise (Yes/No, TALLRec-style) | verbalizer (shuffled labels, LlamaRec-style).")
    ] = "pointwise",
    dataset: DatasetOpt = "ml-latest-small",
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    method: Annotated[str, typer.Option(help="full | lora | auto (full below 1B parameters, else LoRA).")] = "auto",
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lr: Annotated[float, typer.Option(help="Learning rate [default: 1e-4 full, 1e-3 LoRA].")] = 0.0,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 8,
    history: Annotated[int, typer.Option(help="History items shown in training and validation prompts.")] = 10,
    candidates: Annotated[
        int, typer.Option(help="verbalizer: candidates per training prompt (ground truth + negatives).")
    ] = 20,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps (NDCG@10 on validation cases).")] = 50,
    eval_users: Annotated[
        int, typer.Option(help="Validation users (LLMRank validation cases of the seed's sample).")
    ] = 30,
    patience: Annotated[int, typer.Option(help="Stop after N validations without improvement.")] = 3,
    max_minutes: Annotated[float | None, typer.Option(help="Stop (and save) after this much wall time.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Continue from OUT/checkpoint if present.")
    ] = True,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Fine-tune a generative scorer on the training split; writes a merged model folder OUT/model."""
    from ..model_store import DEFAULT_MODEL
    from ..tuning import TuneConfig, tune

    cfg = TuneConfig(
        out=out,
        objective=objective,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
        dataset=dataset,
        data_dir=data_dir,
        model=model or DEFAULT_MODEL,
        method=method,  # pyright: ignore[reportArgumentType]  (pydantic parses the CLI's strings)
        lora_r=lora_r,
        lr=lr or None,
        steps=steps,
        batch_size=batch_size,
        history=history,
        candidates=candidates,
        eval_every=eval_every,
        eval_users=eval_users,
        patience=patience,
        max_minutes=max_minutes,
        resume=resume,
        threads=threads or 1,
        seed=seed,
    )
    result = tune(cfg, log=_echo)
    _echo(
        f"best validation NDCG@10 {result['best_ndcg10']:.4f} at step {result['best_step']}; model: {result['model_dir']}"
    )
