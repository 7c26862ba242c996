"""Fine-tune a generative scorer: pointwise Yes/No (TALLRec-style) or verbalizer (LlamaRec-style).

Examples come from the training split only: contexts ``(user, t)`` sampled from each
user's interactions strictly before their *validation* target
(:func:`~llm_recommender.data.contexts.build_contexts`), so no validation or
test target is ever a training label and validation NDCG@10 is measured on unseen
targets.

* ``pointwise``: the prompt of the pointwise scorer for (history, candidate); the label is
  ``Yes`` for the item the user chose next and ``No`` for a sampled negative (one each).
* ``verbalizer``: the verbalizer prompt with the ground truth and ``candidates - 1``
  sampled negatives in a random order, so the correct label is uniform over positions
  (shuffled labels: the model cannot learn a favourite letter).

The loss is cross-entropy over the label tokens only (the scorers renormalise over the
labels too). Training runs through ``accelerate``: a GPU when there is one, bf16
autocast on CPUs with AMX/AVX512-BF16 (fp32 master weights); full fine-tuning below
``full_max_params`` parameters, LoRA (``peft``, all linear layers) above, merged into
the base weights on save. Every ``eval_every`` steps the validation NDCG@10 is measured
with the real scorer on the LLMRank validation cases; the best model is written to
``OUT/model`` (a plain transformers folder: ``Recommender(model="OUT/model")``), the
resumable state to ``OUT/checkpoint``, and one JSON line per validation to ``OUT/log.jsonl``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidRequestError
from ..files import atomic_folder
from ..model_store import DEFAULT_MODEL

TRAINER_STATE = "trainer_state.json"


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path
    objective: Literal["pointwise", "verbalizer"] = "pointwise"
    dataset: str = "ml-latest-small"
    data_dir: Path | None = None
    model: str = DEFAULT_MODEL
    method: Literal["full", "lora", "auto"] = "auto"
    full_max_params: int = Field(default=1_000_000_000, description="method auto: full fine-tuning up to this size, else LoRA")
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int | None = None
    lr: float | None = Field(default=None, gt=0, description="default: 1e-4 full, 1e-3 LoRA")
    weight_decay: float = 0.0
    warmup_steps: int = Field(default=10, ge=0)
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=8, ge=1)
    history: int = Field(default=10, ge=0, description="history items in training and validation prompts")
    candidates: int = Field(default=20, ge=2, description="verbalizer: candidates per training prompt")
    max_per_user: int = Field(default=20, ge=1, description="training contexts sampled per user")
    eval_every: int = Field(default=50, ge=1)
    eval_users: int = Field(default=30, ge=1)
    patience: int = Field(default=3, ge=1)
    max_minutes: float | None = Field(default=None, gt=0, description="time budget of the whole training: this "
                                      "process (model load included) plus what a resumed run had already trained")
    resume: bool = True
    threads: int = Field(default=1, ge=1)
    seed: int = 0
    progress: bool = True


def build_examples(cfg: TuneConfig, dataset: Any, splits: dict[str, Any]) -> list[dict[str, Any]]:
    """Training examples (item ids only), from interactions before each user's validation target."""
    from ..data.contexts import build_contexts

    item_ids = list(dataset.item_ids)
    index = {iid: k for k, iid in enumerate(item_ids)}
    negatives = 1 if cfg.objective == "pointwise" else cfg.candidates - 1
    ctx = build_contexts(
        splits,
        index,
        train_split="valid",
        negatives=negatives,
        max_per_user=cfg.max_per_user,
        min_history=1,
        max_history=max(cfg.history, 1),
        seed=cfg.seed,
    )
    rng = np.random.default_rng(cfg.seed)
    group = 1 + negatives
    examples = []
    for c in range(len(ctx.user_ids)):
        items = [item_ids[k] for k in ctx.example_item[c * group : (c + 1) * group]]
        hist = [item_ids[k] for k in ctx.histories[c]][-cfg.history :] if cfg.history else []
        base = {"user": ctx.user_ids[c], "history": hist, "row": int(ctx.positive_rows[c])}
        if cfg.objective == "pointwise":
            examples.append(base | {"candidates": [items[0]], "target": 0})  # Yes
            examples.append(base | {"candidates": [items[1]], "target": 1})  # No
        else:
            order = rng.permutation(group)
            examples.append(base | {"candidates": [items[i] for i in order], "target": int(np.argmax(order == 0))})
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


class _Prompter:
    """Renders training examples exactly as the scorers render requests."""

    def __init__(self, cfg: TuneConfig, dataset: Any, backend: Any, renderer: Any) -> None:
        self.cfg, self.dataset, self.backend, self.renderer = cfg, dataset, backend, renderer
        if cfg.objective == "pointwise":
            self.label_ids = [backend.single_token_id("Yes"), backend.single_token_id("No")]
        else:
            from ..scorers.llm.verbalizer import label_tokens

            labels, ids = label_tokens(backend)
            if len(labels) < cfg.candidates:
                raise InvalidRequestError(
                    f"only {len(labels)} single-token labels for {cfg.candidates} candidates", param="candidates"
                )
            self.labels, self.label_ids = labels[: cfg.candidates], ids[: cfg.candidates]
        if None in self.label_ids:
            raise InvalidRequestError("the model has no single-token labels for this objective", param="model")

    def prompt(self, ex: dict[str, Any]) -> tuple[str, list[int]]:
        """``(prompt, label token ids in the order of the targets)``."""
        r = self.renderer
        history = [r.item_view(self.dataset.item(i)) for i in ex["history"]]
        if self.cfg.objective == "pointwise":
            cand = r.item_view(self.dataset.item(ex["candidates"][0]))
            return r.chat("pointwise.j2", history=history, candidate=cand, split=""), self.label_ids
        n = len(ex["candidates"])
        views = [r.item_view(self.dataset.item(c), label=self.labels[k]) for k, c in enumerate(ex["candidates"])]
        return r.chat("verbalizer.j2", history=history, candidates=views, labels=self.labels[:n]), self.label_ids[:n]


def _batch_loss(
    model: Any, tokenizer: Any, prompts: list[str], label_ids: list[list[int]], targets: list[int], device: Any
) -> Any:
    import torch

    from ..backends.kit import mask_positions, padded_batch

    enc = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ids, mask = padded_batch(enc, tokenizer.pad_token_id)  # left padding, as the backend scores
    pos = mask_positions(mask)
    logits = (
        model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            use_cache=False,
            logits_to_keep=1,
        )
        .logits[:, -1, :]
        .float()
    )
    losses = []
    for r, (lab, t) in enumerate(zip(label_ids, targets)):
        losses.append(torch.nn.functional.cross_entropy(logits[r, lab].unsqueeze(0), torch.tensor([t], device=device)))
    return torch.stack(losses).mean()


def _load_model(cfg: TuneConfig) -> tuple[str, Any, Any, str, int]:
    """The model's folder, tokenizer, model (LoRA-wrapped above ``full_max_params``), the method and the parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..model_store import resolve_model

    path = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    method = cfg.method if cfg.method != "auto" else ("full" if n_params <= cfg.full_max_params else "lora")
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, target_modules="all-linear",
                          lora_dropout=0.0, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return path, tokenizer, model, method, n_params


class _Run:
    """One tuning run: model and optimiser on ``accelerate``, the training data, and the state a checkpoint keeps."""

    def __init__(self, cfg: TuneConfig, log: Callable[[str], None]) -> None:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ..backends.kit import auto_dtype

        self.cfg, self.log, self.t_start = cfg, log, time.perf_counter()
        torch.set_num_threads(cfg.threads)
        set_seed(cfg.seed)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.out / "checkpoint"
        cuda = torch.cuda.is_available()
        self.mp = {"bfloat16": "bf16", "float16": "fp16", "float32": "no"}[auto_dtype(cuda)]  # the backends' dtype policy
        self.accelerator = Accelerator(mixed_precision=self.mp, cpu=not cuda)
        self.path, self.tokenizer, model, self.method, self.n_params = _load_model(cfg)
        self.lr = cfg.lr or (1e-4 if self.method == "full" else 1e-3)
        optimizer = torch.optim.AdamW(self.param_groups(model), lr=self.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)) * max(0.1, 1 - s / cfg.steps)
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)

    def param_groups(self, model: Any) -> list[dict[str, Any]]:
        """What the optimiser trains (a subclass may add modules trained beside the LLM, or freeze it)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    # ---- data preparation -------------------------------------------------------------
    def prepare_data(self, examples: list[dict[str, Any]] | None) -> None:
        """Training examples, the prompt renderer and scorer of the tuned model, and the validation cases."""
        from ..backends.configs import TransformersConfig
        from ..backends.transformers_backend import TransformersBackend
        from ..data import load_dataset
        from ..data.splits import leave_one_out, llmrank_cases
        from ..prompts import PromptConfig, PromptRenderer
        from ..scorers import strategy_class

        cfg = self.cfg
        ds = load_dataset(cfg.dataset, cfg.data_dir)
        splits = leave_one_out(ds)
        self.examples = examples if examples is not None else build_examples(cfg, ds, splits)
        backend = TransformersBackend(TransformersConfig(model=self.path, threads=cfg.threads, batch_size=8),
                                      model=self.accelerator.unwrap_model(self.model), tokenizer=self.tokenizer)
        renderer = PromptRenderer(backend, PromptConfig(max_history=cfg.history))
        self.prompter = _Prompter(cfg, ds, backend, renderer)
        self.valid = llmrank_cases(ds, split="valid", n_users=cfg.eval_users, seed=cfg.seed, splits=splits,
                                   history_len=cfg.history)
        self.scorer = strategy_class(cfg.objective)(backend, renderer)

    def start_or_resume(self) -> None:
        self.state: dict[str, Any] = {
            "step": 0, "best_ndcg10": -1.0, "best_step": -1, "bad_evals": 0, "method": self.method,
            "mixed_precision": self.mp, "device": str(self.accelerator.device), "lr": self.lr,
            "examples": len(self.examples), "parameters": self.n_params, "train_seconds": 0.0, "validations": [],
        }
        if self.cfg.resume and (self.ckpt / TRAINER_STATE).is_file():
            self.accelerator.load_state(str(self.ckpt))
            self.state = json.loads((self.ckpt / TRAINER_STATE).read_text())
            self.log(f"resumed from {self.ckpt} at step {self.state['step']}")
        else:
            (self.out / "log.jsonl").unlink(missing_ok=True)

    # ---- training loop ----------------------------------------------------------------
    def train_step(self) -> float:
        """One optimiser step on the next batch (examples cycle in their shuffled order); returns the loss."""
        cfg, k = self.cfg, self.state["step"]
        batch = [self.examples[(k * cfg.batch_size + j) % len(self.examples)] for j in range(cfg.batch_size)]
        with self.accelerator.autocast():
            loss = self.batch_loss(batch)
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.state["step"] += 1
        return float(loss.detach())

    def batch_loss(self, batch: list[dict[str, Any]]) -> Any:
        """The mean cross-entropy of the targets' labels over the batch's prompts (a subclass may prompt otherwise)."""
        rendered = [self.prompter.prompt(ex) for ex in batch]
        return _batch_loss(self.model, self.tokenizer, [p for p, _ in rendered], [lab for _, lab in rendered],
                           [ex["target"] for ex in batch], self.accelerator.device)

    def train(self) -> str | None:
        """Steps until ``cfg.steps``, validating every ``eval_every``; returns why it stopped early, if it did."""
        cfg, state = self.cfg, self.state
        if state["step"] == 0 and not state["validations"]:
            self.record_validation(self.validate())  # the zero-shot starting point
        bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"tune {cfg.objective}", unit="step")
        self.model.train()
        stop = None
        seg_start, base_seconds = time.perf_counter(), state["train_seconds"]
        while state["step"] < cfg.steps and not stop:
            loss = self.train_step()
            state["train_seconds"] = base_seconds + time.perf_counter() - seg_start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
            if not math.isfinite(loss):
                stop = "non-finite loss"
            elif state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
                self.record_validation(self.validate())
                self.checkpoint()
                if state["bad_evals"] >= cfg.patience:
                    stop = f"early stop: {cfg.patience} validations without improvement"
            # the budget covers the whole training: a resumed run counts the minutes trained before it
            spent = base_seconds + time.perf_counter() - self.t_start
            if stop is None and cfg.max_minutes and spent / 60 > cfg.max_minutes:
                stop = f"time limit of {cfg.max_minutes} min"
                if state["validations"][-1]["step"] != state["step"]:
                    self.record_validation(self.validate())  # the last steps count too
        if bar is not None:
            bar.close()
        if stop:
            self.log(stop)
            self.checkpoint()
        return stop

    # ---- evaluation -------------------------------------------------------------------
    def validate(self) -> float:
        """NDCG@10 of the real scorer on the validation cases."""
        from ..metrics import ranking_metrics, target_rank

        self.model.eval()
        with self.accelerator.autocast():
            res = self.scorer.score_many([c.request for c in self.valid])
        self.model.train()
        return ranking_metrics([target_rank(r.scores, c.ground_truth_index) for r, c in zip(res, self.valid)])["ndcg@10"]

    def record_validation(self, ndcg: float) -> None:
        state = self.state
        entry = {"step": state["step"], "ndcg@10": round(ndcg, 4), "train_seconds": round(state["train_seconds"], 1)}
        state["validations"].append(entry)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.log(f"step {state['step']}: validation NDCG@10 {ndcg:.4f} ({self.cfg.eval_users} users)")
        if ndcg > state["best_ndcg10"]:
            state["best_ndcg10"], state["best_step"], state["bad_evals"] = ndcg, state["step"], 0
            self.save_model(self.out / "model")
        else:
            state["bad_evals"] += 1

    # ---- saving -------------------------------------------------------------------------
    def save_model(self, folder: Path) -> None:
        """The best model as a plain transformers folder (LoRA merged), swapped in whole."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        merged = copy.deepcopy(unwrapped).merge_and_unload() if self.method == "lora" else unwrapped
        record = self.state | {"config": self.cfg.model_dump(mode="json")}
        with atomic_folder(folder) as tmp:
            merged.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / "llm_rec_tune.json").write_text(json.dumps(record, indent=2))

    def checkpoint(self) -> None:
        self.accelerator.save_state(str(self.ckpt))
        (self.ckpt / TRAINER_STATE).write_text(json.dumps(self.state, indent=2))


def tune(
    cfg: TuneConfig, log: Callable[[str], None] = print, examples: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Fine-tune; returns ``{best_ndcg10, best_step, model_dir, steps_done, seconds, ...}``."""
    run = _Run(cfg, log)
    run.prepare_data(examples)
    run.start_or_resume()
    stop = run.train()
    state = run.state
    return {
        "best_ndcg10": state["best_ndcg10"],
        "best_step": state["best_step"],
        "model_dir": str(run.out / "model"),
        "steps_done": state["step"],
        "stopped": stop,
        "seconds": round(time.perf_counter() - run.t_start, 1),
        "method": run.method,
        "mixed_precision": run.mp,
        "validations": state["validations"],
    }
