"""``llm-rec tune generative``: fine-tune a generative scorer (pointwise Yes/No or verbalizer; full or LoRA),
through accelerate (a GPU when present, bf16 autocast on CPUs with AMX or AVX512-BF16), from interactions before each user's
validation target. The representation head is fitted by ``llm-rec fit`` as a bundle component."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from . import app
from .common import ModelOpt, ThreadsOpt, recommender_kwargs, with_options

tune_app = typer.Typer(help="Fine-tune a generative scorer (the representation head is part of `llm-rec fit`).", no_args_is_help=True)
app.add_typer(tune_app, name="tune")


def _opt(kind: Any, help: str, *flags: str) -> Any:
    return Annotated[kind, typer.Option(*flags, help=help)]


# The options of `tune generative`, in --help order: name -> (type and help, default); each a TuneConfig field.
GENERATIVE_OPTIONS: dict[str, tuple[Any, Any]] = {
    "objective": (_opt(str, "pointwise (Yes/No, TALLRec-style) | verbalizer (shuffled labels, LlamaRec-style)."), "pointwise"),
    "dataset": (_opt(str, "ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic."), "ml-latest-small"),
    "data_dir": (_opt(Path | None, "Folder with the dataset's files."), None),
    "model": (ModelOpt, None),
    "method": (_opt(str, "full | lora | auto (full below 1B parameters, else LoRA)."), "auto"),
    "lora_r": (_opt(int, "LoRA rank."), 16),
    "lr": (_opt(float, "Learning rate [default: 1e-4 full, 1e-3 LoRA]."), 0.0),
    "steps": (_opt(int, "Optimiser steps."), 300),
    "batch_size": (_opt(int, "Examples per step."), 8),
    "history": (_opt(int, "History items shown in training and validation prompts."), 10),
    "candidates": (_opt(int, "verbalizer: candidates per training prompt (ground truth + negatives)."), 20),
    "eval_every": (_opt(int, "Validate every N steps (NDCG@10 on validation cases)."), 50),
    "eval_users": (_opt(int, "Validation users (LLMRank validation cases of the seed's sample)."), 30),
    "patience": (_opt(int, "Stop after N validations without improvement."), 3),
    "max_minutes": (_opt(float | None, "Stop (and save) after this much wall time."), None),
    "resume": (_opt(bool, "Continue from OUT/checkpoint if present.", "--resume/--no-resume"), True),
    "threads": (ThreadsOpt, None),
    "seed": (_opt(int, "Seed for sampling and initialisation."), 0),
}


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


@tune_app.command("generative")
@with_options(GENERATIVE_OPTIONS, into="options")
def tune_generative(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint/, model/ (merged, loads with --model), log.jsonl.")],
    options: dict[str, Any],
) -> None:
    """Fine-tune a generative scorer on the training split; writes a merged model folder OUT/model."""
    from ..tuning import TuneConfig, tune

    # 0 and None mean "the default": the method's learning rate, one thread, the embedded model.
    options.update(lr=options["lr"] or None, threads=options["threads"] or 1)
    result = tune(TuneConfig(out=out, **recommender_kwargs(**options)), log=_echo)
    _echo(
        f"best validation NDCG@10 {result['best_ndcg10']:.4f} at step {result['best_step']}; model: {result['model_dir']}"
    )
