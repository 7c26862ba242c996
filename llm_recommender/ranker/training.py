"""Fine-tuning the LLM ranker: ``tuning.generative``'s loop (accelerate, bf16 autocast where the
CPU has AMX, full fine-tuning up to ``full_max_params``, LoRA above, resumable checkpoints, time
budget, early stopping, ``log.jsonl``) on the ranker's own examples, prompts and validation cases.

What differs from ``llm-rec tune generative``: the examples (hard negatives and CF hints, see
:mod:`.examples`), the prompt (:mod:`.scorer`), the validation cases (the fit's validation cases,
given), and what is saved: merged weights for full fine-tuning, the adapter alone for LoRA.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tuning.generative import TuneConfig, _Run

TUNE_RECORD = "llm_rec_tune.json"


class RankerRun(_Run):
    """A :class:`tuning.generative._Run` whose data is handed in instead of loaded from a dataset."""

    def prepare(self, examples: list[dict[str, Any]], valid: list[Any], make_prompter: Callable[[Any], Any]) -> None:
        from ..backends.configs import TransformersConfig
        from ..backends.transformers_backend import TransformersBackend
        from .scorer import RankerScorer

        backend = TransformersBackend(TransformersConfig(model=self.path, threads=self.cfg.threads),
                                      model=self.accelerator.unwrap_model(self.model), tokenizer=self.tokenizer)
        self.examples = examples
        self.prompter = make_prompter(backend)
        self.valid = valid
        self.scorer = RankerScorer(self.prompter)

    def validate(self) -> float:
        return super().validate() if self.valid else math.nan

    def record_validation(self, ndcg: float) -> None:
        if self.valid:
            return super().record_validation(ndcg)
        # no validation cases: nothing to select on, so the latest weights are the model
        entry = {"step": self.state["step"], "ndcg@10": None, "train_seconds": round(self.state["train_seconds"], 1)}
        self.state["validations"].append(entry)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.state["best_step"] = self.state["step"]
        self.save_model(self.out / "model")

    def save_model(self, folder: Path) -> None:
        if self.method != "lora":
            return super().save_model(folder)  # merged full weights: a plain transformers folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(str(tmp))  # the adapter alone
        self.tokenizer.save_pretrained(str(tmp))
        record = self.state | {"config": self.cfg.model_dump(mode="json")}
        (tmp / TUNE_RECORD).write_text(json.dumps(record, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)


def train_ranker(cfg: TuneConfig, examples: list[dict[str, Any]], valid: list[Any],
                 make_prompter: Callable[[Any], Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume) in ``cfg.out``; the best weights end in ``cfg.out / "model"``. Returns the run's state."""
    run = RankerRun(cfg, log)
    run.prepare(examples, valid, make_prompter)
    run.start_or_resume()
    stop = run.train()
    state = dict(run.state)
    state["stopped"] = stop
    state["batch_size"] = cfg.batch_size
    del run
    return state


def load_tuned(folder: Path, base_model: str, *, dtype: str = "auto", threads: int | None = None) -> Any:
    """A transformers backend over the tuned weights in ``folder`` (an adapter is merged into ``base_model``)."""
    from ..backends.configs import TransformersConfig
    from ..backends.transformers_backend import TransformersBackend

    if not (folder / "adapter_config.json").is_file():
        return TransformersBackend(TransformersConfig(model=str(folder), dtype=dtype, threads=threads))  # pyright: ignore[reportArgumentType]
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..backends.kit import auto_dtype
    from ..model_store import resolve_model

    name = dtype if dtype != "auto" else auto_dtype(torch.cuda.is_available())
    base = AutoModelForCausalLM.from_pretrained(resolve_model(base_model), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload().to(getattr(torch, name))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return TransformersBackend(TransformersConfig(model=base_model, dtype=dtype, threads=threads),  # pyright: ignore[reportArgumentType]
                               model=model, tokenizer=tokenizer)
