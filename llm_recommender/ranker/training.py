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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tuning.generative import TuneConfig, _Run

TUNE_RECORD = "llm_rec_tune.json"


class RankerRun(_Run):
    """A :class:`tuning.generative._Run` whose data is handed in instead of loaded from a dataset.

    ``item_table`` (``(table, known)``, see :mod:`.soft_tokens`): train an item-token projection beside
    the LLM (at ``tokens_lr``); ``freeze_llm``: train the projection alone (the ``projection`` method).
    """

    item_tokens: Any = None

    def __init__(self, cfg: TuneConfig, log: Callable[[str], None], *, item_table: tuple[Any, ...] | None = None,
                 freeze_llm: bool = False, tokens_lr: float = 1e-3) -> None:
        self.item_table, self.freeze_llm, self.tokens_lr = item_table, freeze_llm, tokens_lr
        super().__init__(cfg, log)
        if freeze_llm:
            self.method = "projection"

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        if self.freeze_llm:
            model.requires_grad_(False)
        groups = [] if self.freeze_llm else super().param_groups(model)
        if self.item_table is not None:
            from .soft_tokens import ItemTokens, label_vectors

            table, known, *rest = self.item_table  # (table, known[, score_dim[, slot_labels]])
            score_dim = rest[0] if rest else 0
            labels = label_vectors(model, self.tokenizer, self.cfg.candidates) if len(rest) > 1 and rest[1] else None
            self.item_tokens = ItemTokens(table, known, int(model.config.hidden_size), seed=self.cfg.seed,
                                          score_dim=score_dim, label_init=labels)
            self.item_tokens.to(self.accelerator.device)
            self.accelerator.register_for_checkpointing(self.item_tokens)  # resumed with the model
            groups.append({"params": list(self.item_tokens.parameters()), "lr": self.tokens_lr})
        if not groups:
            raise ValueError("nothing to train: the LLM is frozen and there are no item tokens")
        return groups

    def batch_loss(self, batch: list[dict[str, Any]]) -> Any:
        if self.item_tokens is None:
            return super().batch_loss(batch)
        import torch

        from .soft_tokens import last_logits, slot_logprobs

        rendered = [self.prompter.prompt(ex) for ex in batch]
        device = self.accelerator.device
        prompts, pad = [p for p, _ in rendered], self.tokenizer.pad_token_id
        if self.prompter.readout == "slot":  # one score per candidate: log p(yes) - log p(no) after its soft token
            at = slot_logprobs(self.model, self.item_tokens, prompts, pad, device,
                               [len(ex["candidates"]) for ex in batch], self.prompter.readout_ids)
            return torch.stack([torch.nn.functional.cross_entropy((lp[:, 0] - lp[:, 1]).unsqueeze(0),
                                                                  torch.tensor([ex["target"]], device=device))
                                for lp, ex in zip(at, batch)]).mean()
        logits = last_logits(self.model, self.item_tokens, prompts, pad, device).float()
        losses = [torch.nn.functional.cross_entropy(logits[r, lab].unsqueeze(0), torch.tensor([ex["target"]],
                                                                                               device=device))
                  for r, ((_, lab), ex) in enumerate(zip(rendered, batch))]
        return torch.stack(losses).mean()

    def prepare(self, examples: list[dict[str, Any]], valid: list[Any],
                make_prompter: Callable[[Any, Any], Any]) -> None:
        from ..backends.configs import TransformersConfig
        from ..backends.transformers_backend import TransformersBackend
        from .scorer import RankerScorer

        backend = TransformersBackend(TransformersConfig(model=self.path, threads=self.cfg.threads),
                                      model=self.accelerator.unwrap_model(self.model), tokenizer=self.tokenizer)
        self.examples = examples
        self.prompter = make_prompter(backend, self.item_tokens)
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
        """The best weights: merged full weights (a plain transformers folder), the LoRA adapter alone, or
        nothing of the LLM (``projection``: it is the base model); the item tokens beside them."""
        from ..files import atomic_folder
        from .soft_tokens import TOKENS_FILE

        record = self.state | {"config": self.cfg.model_dump(mode="json")}
        with atomic_folder(folder) as tmp:
            if not self.freeze_llm:
                self.accelerator.unwrap_model(self.model).save_pretrained(str(tmp))  # LoRA: the adapter alone
            self.tokenizer.save_pretrained(str(tmp))
            if self.item_tokens is not None:
                self.item_tokens.save(tmp / TOKENS_FILE)
            (tmp / TUNE_RECORD).write_text(json.dumps(record, indent=2))


def train_ranker(cfg: TuneConfig, examples: list[dict[str, Any]], valid: list[Any],
                 make_prompter: Callable[[Any, Any], Any], log: Callable[[str], None], *,
                 item_table: tuple[Any, ...] | None = None, freeze_llm: bool = False,
                 tokens_lr: float = 1e-3) -> dict[str, Any]:
    """Train (or resume) in ``cfg.out``; the best weights end in ``cfg.out / "model"``. Returns the run's state."""
    run = RankerRun(cfg, log, item_table=item_table, freeze_llm=freeze_llm, tokens_lr=tokens_lr)
    run.prepare(examples, valid, make_prompter)
    run.start_or_resume()
    stop = run.train()
    state = dict(run.state)
    state["stopped"] = stop
    state["batch_size"] = cfg.batch_size
    del run
    return state


def load_tuned(folder: Path, base_model: str, *, dtype: str = "auto", threads: int | None = None,
               engine: str = "transformers", vllm: dict[str, Any] | None = None, prompt_embeds: bool = False,
               server: dict[str, Any] | None = None) -> Any:
    """A backend over the tuned weights in ``folder``: merged full weights (a model folder), an adapter merged
    into ``base_model`` (on vLLM through a merged folder written once under the cache, see
    :func:`merged_adapter_folder`), or ``base_model`` itself (the projection method: no LLM weights). ``engine``
    openai: a server already running those weights (``llm-rec serve-model --bundle``), at ``server``'s base_url."""
    from ..backends.configs import TransformersConfig
    from ..backends.transformers_backend import TransformersBackend

    adapter = (folder / "adapter_config.json").is_file()
    weights = str(folder) if (folder / "config.json").is_file() else base_model
    if engine == "openai":
        from ..backends.configs import OpenAIConfig
        from ..backends.openai_backend import OpenAIBackend

        local = servable_folder(folder, base_model)  # the tokenizer and input embeddings of what the server runs
        return OpenAIBackend(OpenAIConfig.model_validate({**(server or {}), "model": str(local), "tokenizer": str(local)}))
    if engine == "vllm":
        from ..backends.configs import VLLMConfig
        from ..backends.vllm_backend import VLLMBackend

        config = VLLMConfig.model_validate({**(vllm or {}), "model": str(servable_folder(folder, base_model)),
                                            "dtype": dtype})
        return VLLMBackend(config, **({"enable_prompt_embeds": True} if prompt_embeds else {}))
    if not adapter:
        return TransformersBackend(TransformersConfig(model=weights, dtype=dtype, threads=threads))  # pyright: ignore[reportArgumentType]
    import torch

    from ..backends.kit import auto_dtype

    name = dtype if dtype != "auto" else auto_dtype(torch.cuda.is_available())
    model, tokenizer = _merge_adapter(folder, base_model)
    return TransformersBackend(TransformersConfig(model=base_model, dtype=dtype, threads=threads),  # pyright: ignore[reportArgumentType]
                               model=model.to(getattr(torch, name)), tokenizer=tokenizer)


def servable_folder(folder: Path, base_model: str) -> Path:
    """The model folder an engine or server loads for the tuned weights in ``folder``: the folder itself (full
    fine-tuning), the adapter merged into the base (:func:`merged_adapter_folder`), or the base model (the
    projection method)."""
    from ..model_store import resolve_model

    if (folder / "adapter_config.json").is_file():
        return merged_adapter_folder(folder, base_model)
    return folder if (folder / "config.json").is_file() else Path(resolve_model(base_model))


def _merge_adapter(folder: Path, base_model: str) -> tuple[Any, Any]:
    """The LoRA adapter in ``folder`` merged into ``base_model`` (fp32), and the tokenizer saved beside it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model_store import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model(base_model), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload(), AutoTokenizer.from_pretrained(str(folder))


def merged_adapter_folder(folder: Path, base_model: str) -> Path:
    """A plain transformers folder of the LoRA adapter in ``folder`` merged into ``base_model``, for engines that
    load weights from a folder (vLLM). Written once under the cache, named by a hash of the adapter's files and
    the base model, so a changed adapter or base gets its own folder; the same merge as the transformers path."""
    import hashlib

    from ..files import atomic_folder
    from ..model_store import cache_dir, resolve_model

    digest = hashlib.sha256(resolve_model(base_model).encode())
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    target = cache_dir() / "merged-adapters" / digest.hexdigest()[:24]
    if not (target / "config.json").is_file():
        model, tokenizer = _merge_adapter(folder, base_model)
        with atomic_folder(target, replace=False) as tmp:
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    return target
