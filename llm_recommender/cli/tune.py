"""``llm-rec tune``: train the representation head, or fine-tune a generative scorer.

* ``llm-rec tune head``: the logistic head over LLM hidden states (minutes on a CPU).
* ``llm-rec tune generative``: pointwise Yes/No or verbalizer fine-tuning (full or LoRA),
  through accelerate (a GPU when present, bf16 autocast on AMX CPUs).

Both learn only from interactions before each user's validation target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import ModelOpt, ThreadsOpt

tune_app = typer.Typer(help="Train the representation head or fine-tune a generative scorer.", no_args_is_help=True)
app.add_typer(tune_app, name="tune")

DatasetOpt = Annotated[str, typer.Option(help="ml-100k | ml-1m | ml-latest-small (bundled) | amazon-beauty | generic.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder with the dataset's files.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for sampling and initialisation.")]


def _echo(msg: str) -> None:
    typer.echo(msg, err=True)


@tune_app.command("head")
def tune_head(
    out: Annotated[Path, typer.Option(help="Folder to write head.json + head.safetensors to.")],
    dataset: DatasetOpt = "ml-latest-small",
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    threads: ThreadsOpt = None,
    layer: Annotated[int | None, typer.Option(help="hidden_states index to pool [default: the middle layer].")] = None,
    pooling: Annotated[str, typer.Option(help="mean (over the item's tokens) | last (token).")] = "mean",
    recency_decay: Annotated[float, typer.Option(help="h_u = recency-weighted mean of history h_i.")] = 0.9,
    dim: Annotated[int | None, typer.Option(help="PCA dimensions of h [default: all].")] = None,
    negatives: Annotated[int, typer.Option(help="Sampled negatives per positive.")] = 4,
    max_per_user: Annotated[int, typer.Option(help="Training contexts sampled per user.")] = 40,
    epochs: Annotated[int, typer.Option(help="Passes over the training examples.")] = 6,
    l2: Annotated[float, typer.Option(help="L2 penalty on the standardised weights.")] = 1e-4,
    seed: SeedOpt = 0,
) -> None:
    """Train the representation head on the training split (interactions before each user's validation target)."""
    from ..data import load_dataset
    from ..recommender import Recommender
    from ..representation import HeadConfig, ItemEncoder, fit_head

    ds = load_dataset(dataset, data_dir)
    opts = {k: v for k, v in {"model": model, "threads": threads}.items() if v is not None}
    rec = Recommender(**opts)
    b = rec.backend
    encoder = ItemEncoder(
        b.model,
        b.tokenizer,
        rec.renderer,
        model_name=b.model_name,
        layer=layer,
        pooling=pooling,  # type: ignore[attr-defined]
        batch_size=32,
    )
    config = HeadConfig(
        model=b.model_name,
        layer=encoder.layer,
        pooling=pooling,
        recency_decay=recency_decay,
        dim=dim,
        l2=l2,
        epochs=epochs,
        seed=seed,
    )
    head, _ = fit_head(ds, encoder, config, negatives=negatives, max_per_user=max_per_user, log=_echo)
    head.save(out)
    _echo(f"saved {out} ({head.record['total_seconds']} s); use it with --strategy representation --head {out}")


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
    from ..tuning import TuneConfig, tune

    cfg = TuneConfig(
        out=out,
        objective=objective,
        dataset=dataset,
        data_dir=data_dir,
        model=model or "smollm2-135m-instruct",
        method=method,
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
