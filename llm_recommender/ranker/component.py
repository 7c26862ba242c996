"""``llm_ranker``: the bundle's LLM fine-tuned into a listwise ranker, one more fusion feature.

fit: collaborative hints (popularity, a retriever's catalogue rank) from the training
sequences; training examples from each user's last ``tail`` training interactions with hard
negatives from a retriever fitted on the interactions before them (:mod:`.examples`); the
verbalizer's objective (cross-entropy over the candidates' label tokens at one position) through
``tuning.generative``'s loop; validation NDCG@10 of the component alone on the fit's
validation cases every ``eval_every`` steps (the learning curve); the best weights kept.

score: up to ``candidates`` candidates per forward pass (more in chunks), the label
log-probabilities renormalised over the labels of the pass. The fusion keeps or drops the
component on its marginal gain like any other.

With ``item_tokens`` (als, sequence), each history item and candidate also gets one soft token:
the item's vector from that collaborative model (fitted once on the training sequences, saved)
through a learned projection (:mod:`.soft_tokens`); ``method="projection"`` trains it alone.
Scoring runs on the transformers backend or the vLLM engine (``backend``).

Files (the component's folder): ``model/`` (merged weights for full fine-tuning, the adapter
for LoRA, none for projection; ``model/item_tokens/`` the item-token table and projection),
``hints/`` (popularity counts and the retriever), ``learning_curve.json``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..configurable import ComponentConfig
from ..model_store import DEFAULT_MODEL
from ..protocol import Item, RankRequest
from ..scorers.base import ScoreResult
from ..scorers.component import Component, TrainingData
from .examples import build_examples, split_tails
from .hints import CollaborativeHints

ItemTokenSource = Literal["none", "sequence", "als"]

CURVE_FILE = "learning_curve.json"
ITEM_MODEL_DIR = "item_model"  # the sequence component behind cf_scores
# settings that do not change what a resumed run computes (a run may be resumed with more steps or time)
SERVING_FIELDS = frozenset({"backend", "vllm", "server", "dtype", "threads"})  # where it scores, not what it learned
_RESUME_NEUTRAL = {"work_dir", "progress", "max_minutes", "steps", "threads", "resume", "dtype", "backend", "vllm",
                   "server"}


class LLMRankerConfig(ComponentConfig):
    model: str | None = Field(default=None, description="the LLM to fine-tune (a local folder, an alias or a hub id); "
                              "default: the bundle's (the fit's --model)")
    method: Literal["full", "lora", "auto", "projection"] = Field(
        default="auto", description="full fine-tuning, LoRA, auto (full up to full_max_params, else LoRA), or "
        "projection: the LLM frozen, only the item-token projection trains (needs item_tokens)")
    full_max_params: int = Field(default=1_000_000_000, description="method auto: full fine-tuning up to this size")
    lora_r: int = Field(default=16, ge=1)
    lr: float | None = Field(default=None, gt=0, description="default: 1e-4 full, 1e-3 LoRA")
    warmup_steps: int = Field(default=10, ge=0)
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=4, ge=1)
    max_minutes: float | None = Field(default=30.0, gt=0, description="time budget of the training (model load included); a resumed run counts the minutes it had "
                               "trained before")
    history: int = Field(default=10, ge=0, description="history items shown in a prompt (the most recent)")
    retrieval_history: int = Field(default=50, ge=1, description="history items the retriever folds in")
    candidates: int = Field(default=20, ge=2, le=26, description="candidates per training prompt and per scoring pass")
    hard_negatives: int = Field(default=9, ge=0, description="negatives from the retriever's top hard_pool")
    hard_pool: int = Field(default=50, ge=1)
    tail: int = Field(default=5, ge=1, description="training examples per user: their last `tail` training interactions")
    hints: bool = Field(default=True, description="show the collaborative hints (False: titles alone)")
    item_tokens: ItemTokenSource = Field(
        default="none", description="one soft token per history item and candidate carrying the item's vector from "
        "this collaborative model (fitted on the training sequences, saved with the component) through a learned "
        "projection; none: text alone")
    item_tokens_config: dict[str, Any] | None = Field(default=None, description="config of the item-token model")
    tokens_lr: float = Field(default=1e-3, gt=0, description="learning rate of the item-token projection")
    cf_scores: bool = Field(default=False, description="each candidate's soft token also carries the item model's "
                            "score for this history (z-scored over the pass), LlamaRec's retriever signal as a vector; "
                            "the item model is then fitted without each user's last `tail` items; needs "
                            "item_tokens=sequence")
    slot_labels: bool = Field(default=False, description="each candidate's soft token also carries a learned "
                              "vector of its label (started from the LLM's embedding of the letter), so the label to "
                              "answer sits in the same position as the item's signal; needs item_tokens")
    readout: Literal["label", "slot"] = Field(
        default="label", description="label: the verbalizer (the candidates' label tokens at the last position, "
        "LlamaRec); slot: each candidate's soft token goes last on its line and the LLM's next-token log p(' yes') "
        "- log p(' no') right after it is its score (one pass on transformers; the item's signal is read where it "
        "enters, no attention hop to learn; needs item_tokens; on vLLM one cut prompt per candidate)")
    cold_dropout: float = Field(default=0.0, ge=0, lt=1, description="training: this share of the candidates "
                                "(drawn per example, seeded) is shown as items the bundle never saw: the unknown "
                                "item's token with the CF score kept, as a cold item is served (with cf_scores from "
                                "a text-backed item model, the score comes from its text path)")
    titles: bool = Field(default=True, description="show the titles (False: item tokens and labels only, a much "
                         "shorter prompt; needs item_tokens)")
    retriever: str = Field(default="als", description="the component whose catalogue ranking gives hints and hard negatives")
    retriever_config: dict[str, Any] | None = None
    eval_every: int = Field(default=25, ge=1)
    eval_users: int = Field(default=100, ge=1, description="validation cases of the learning curve (the fit's first N)")
    patience: int = Field(default=4, ge=1)
    dtype: str = Field(default="auto", description="scoring dtype (auto: bf16 on GPUs and on CPUs with AMX or AVX512-BF16, else fp32)")
    backend: Literal["transformers", "vllm", "openai"] = Field(
        default="transformers", description="the engine that scores: transformers, the vLLM engine (item tokens "
        "through its prompt-embeddings input), or openai: a server running these weights, started by "
        "`llm-rec serve-model --bundle` (item tokens as prompt_embeds over HTTP)")
    vllm: dict[str, Any] = Field(default_factory=dict, description="vLLM engine settings (VLLMConfig: in_process, "
                                 "kv_cache_gib, max_model_len, ...)")
    server: dict[str, Any] = Field(default_factory=dict, description="backend openai: the server (OpenAIConfig: "
                                   "base_url, served_model, request_timeout, ...)")
    threads: int | None = Field(default=None, description="torch threads (default: the process's)")
    work_dir: str | None = Field(default=None, description="checkpoints; default: a folder in the cache keyed by "
                                 "the config and the training data, so an interrupted fit resumes")
    resume: bool = True
    progress: bool = True


    @model_validator(mode="after")
    def _needs_item_tokens(self) -> LLMRankerConfig:
        if self.slot_labels and self.item_tokens == "none":
            raise ValueError("slot_labels rides on the item tokens: it needs item_tokens (sequence or als)")
        if self.readout == "slot" and self.item_tokens == "none":
            raise ValueError("readout slot reads each candidate's soft token: it needs item_tokens (sequence or als)")
        if self.cf_scores and self.item_tokens != "sequence":
            raise ValueError("cf_scores reads the sequence model's scores: it needs item_tokens=sequence")
        if self.cold_dropout and self.item_tokens == "none":
            raise ValueError("cold_dropout hides item tokens: it needs item_tokens (sequence or als)")
        if self.item_tokens == "none":
            if not self.titles:
                raise ValueError("titles=false leaves nothing to rank by: it needs item_tokens (sequence or als)")
            if self.method == "projection":
                raise ValueError("method projection trains the item-token projection alone: it needs item_tokens")
        return self


def chance_ndcg10(n: int) -> float:
    """NDCG@10 of a uniformly random order of ``n`` candidates with one relevant."""
    return float(sum(1.0 / np.log2(r + 2) for r in range(min(10, n))) / n)


class LLMRankerComponent(Component):
    """The bundle's LLM, fine-tuned as a verbalizer over a retriever's hard candidates with CF hints in the prompt."""

    name = "llm_ranker"
    kind = "llm"
    # needs_llm stays False: it is a bundle component that carries its own fine-tuned model (in its
    # folder), not a strategy built on the pipeline's backend; it still runs an LLM for every request.
    config_class = LLMRankerConfig
    config: LLMRankerConfig
    serving_fields = SERVING_FIELDS

    hints: CollaborativeHints
    curve: dict[str, Any]
    model_dir: Path
    examples: list[dict[str, Any]]
    _scorer: Any = None
    _item_model: Any = None  # the sequence component behind cf_scores (saved in item_model/)

    # ---- training -------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> LLMRankerComponent:
        from ..tuning.generative import TuneConfig
        from .training import train_ranker

        self.config = self.config.model_copy(update={"model": self.config.model or data.model or DEFAULT_MODEL})
        cfg = self.config
        assert cfg.model is not None
        log = _log
        self.hints = CollaborativeHints.fit(self.space, data.sequences, cfg.retriever, cfg.retriever_config, data.seed)
        prefix_hints = CollaborativeHints.fit(self.space, split_tails(data.sequences, cfg.tail), cfg.retriever,
                                              cfg.retriever_config, data.seed)
        self.examples = build_examples(data.sequences, prefix_hints, tail=cfg.tail, history=cfg.history,
                                       retrieval_history=cfg.retrieval_history, candidates=cfg.candidates,
                                       hard=cfg.hard_negatives, hard_pool=cfg.hard_pool, seed=data.seed)
        valid = list(data.validation[: cfg.eval_users])
        work = self._work_dir(data)
        log(f"llm_ranker: {len(self.examples)} training examples, {len(valid)} validation cases, checkpoints in {work}")
        threads = cfg.threads or _torch_threads()
        item_table = None
        if cfg.item_tokens != "none":
            from .soft_tokens import fit_item_model, fit_item_table

            item_data = data
            if cfg.cf_scores:  # the examples' targets must be unseen by the model whose scores the prompt shows
                item_data = TrainingData(self.space, [s for s in split_tails(data.sequences, cfg.tail) if len(s)],
                                         seed=data.seed)
            self._item_model = fit_item_model(cfg.item_tokens, self.space, item_data, cfg.item_tokens_config)
            table, known = fit_item_table(cfg.item_tokens, self.space, item_data, comp=self._item_model)
            item_table = (table, known, 1 if cfg.cf_scores else 0, cfg.slot_labels)
            log(f"llm_ranker: item tokens from {cfg.item_tokens} ({item_table[0].shape[1]}-d, "
                f"{int(item_table[1].sum())} of {len(self.space)} items known)")
        method = "full" if cfg.method == "projection" else cfg.method
        tune_cfg = TuneConfig(out=work, objective="verbalizer", model=cfg.model, method=method,
                              full_max_params=cfg.full_max_params, lora_r=cfg.lora_r, lr=cfg.lr,
                              warmup_steps=cfg.warmup_steps, steps=cfg.steps, batch_size=cfg.batch_size,
                              history=cfg.history, candidates=cfg.candidates, eval_every=cfg.eval_every,
                              eval_users=max(1, len(valid)), patience=cfg.patience, max_minutes=cfg.max_minutes,
                              resume=cfg.resume, threads=threads, seed=data.seed, progress=cfg.progress)
        state = train_ranker(tune_cfg, self.examples, valid, self._prompter_factory(self.hints), log,
                             item_table=item_table, freeze_llm=cfg.method == "projection", tokens_lr=cfg.tokens_lr)
        n_cands = len(valid[0].request.candidates) if valid else cfg.candidates
        self.curve = {
            "points": [{"step": v["step"], "examples_seen": v["step"] * cfg.batch_size, "ndcg@10": v["ndcg@10"],
                        "train_seconds": v["train_seconds"]} for v in state["validations"]],
            "validation_cases": len(valid), "chance_ndcg@10": round(chance_ndcg10(n_cands), 4),
            "best_step": state["best_step"], "best_ndcg@10": state["best_ndcg10"] if valid else None,
            "steps_done": state["step"], "stopped": state["stopped"], "method": state["method"],
            "mixed_precision": state["mixed_precision"], "device": state["device"], "lr": state["lr"],
            "parameters": state["parameters"], "training_examples": len(self.examples), "batch_size": cfg.batch_size,
            "train_seconds": round(state["train_seconds"], 1), "threads": threads, "model": cfg.model,
        }
        self.model_dir = work / "model"
        self._scorer = None
        return self

    def _work_dir(self, data: TrainingData) -> Path:
        if self.config.work_dir:
            return Path(self.config.work_dir)
        from ..model_store import cache_dir

        h = hashlib.sha256(json.dumps(self.config.model_dump(mode="json", exclude=_RESUME_NEUTRAL),
                                      sort_keys=True).encode())
        h.update(str(data.seed).encode())
        h.update("\x1f".join(self.space.ids).encode())
        for seq in data.sequences:
            h.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
        return cache_dir() / "llm-ranker" / h.hexdigest()[:16]

    def _prompter_factory(self, hints: CollaborativeHints) -> Any:
        from .scorer import RankerPrompter

        cfg = self.config
        return lambda backend, item_tokens=None: RankerPrompter(
            backend, self.space, hints, history=cfg.history, max_per_pass=cfg.candidates, show_hints=cfg.hints,
            retrieval_history=cfg.retrieval_history, item_tokens=item_tokens, titles=cfg.titles,
            item_scores=self._item_scores if cfg.cf_scores else None, slot_labels=cfg.slot_labels,
            readout=cfg.readout, cold_dropout=cfg.cold_dropout)

    def _item_scores(self, history: list[Item], candidates: list[Item]) -> np.ndarray:
        """The item model's logits of ``candidates`` after ``history`` (the slots' CF scores); items it has not
        seen through its text path when it has one."""
        assert self._item_model is not None
        return self._item_model.score_items([history], [candidates])[0]

    # ---- scoring --------------------------------------------------------------------------
    def _ranker(self) -> Any:
        if self._scorer is None:
            from .scorer import RankerScorer
            from .training import load_tuned

            backend = load_tuned(self.model_dir, self.config.model or DEFAULT_MODEL, dtype=self.config.dtype,
                                 threads=self.config.threads, engine=self.config.backend, vllm=self.config.vllm,
                                 server=self.config.server,
                                 prompt_embeds=self.config.item_tokens != "none")
            tokens = None
            if self.config.item_tokens != "none":
                from .soft_tokens import TOKENS_FILE, ItemTokens

                tokens = ItemTokens.load(self.model_dir / TOKENS_FILE).to(getattr(backend, "device", "cpu"))
            self._scorer = RankerScorer(self._prompter_factory(self.hints)(backend, tokens))
        return self._scorer

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        return self._ranker().score_many(requests)

    def engine(self) -> tuple[str, str]:
        """(model, backend) as a response names them: its own fine-tuned LLM, and where it scores."""
        return f"{self.config.model or DEFAULT_MODEL} fine-tuned (llm_ranker)", self.config.backend

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # score_many renders prompts from the request's items

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        return np.exp(scores)

    def describe(self) -> dict[str, Any]:
        return {"learning_curve": self.curve, "retriever": self.hints.retriever.name, "hints": self.config.hints,
                "item_tokens": self.config.item_tokens, "titles": self.config.titles, "readout": self.config.readout}

    # ---- files ----------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        target = folder / "model"
        if target.resolve() != self.model_dir.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(self.model_dir, target, ignore=shutil.ignore_patterns("*.tmp"))
        self.hints.save(folder / "hints")
        if self.config.cf_scores and self._item_model is not None:
            self._item_model.save(folder / ITEM_MODEL_DIR)
        (folder / CURVE_FILE).write_text(json.dumps(self.curve, indent=1) + "\n")

    def load_state(self, folder: Path) -> None:
        self.model_dir = folder / "model"
        self.hints = CollaborativeHints.load(folder / "hints", self.space)
        self.curve = json.loads((folder / CURVE_FILE).read_text())
        self._item_model = None
        if self.config.cf_scores:
            from ..scorers import scorer_class

            item_cls: Any = scorer_class(self.config.item_tokens)  # a Component (sequence)
            self._item_model = item_cls.load(folder / ITEM_MODEL_DIR, self.space)
        self._scorer = None


def _torch_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
