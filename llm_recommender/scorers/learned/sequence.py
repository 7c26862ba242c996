"""The sequence component: h_u from a causal encoder over the history's h_i = ID embedding + text projection.

The model itself (:mod:`.sequence_model`) needs torch; this module imports it only to fit or
load one, so the registry lists ``sequence`` where torch is not installed.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ...configurable import ComponentConfig
from ...protocol import Item
from ..base import ScoreResult
from ..component import Component, TrainingData
from ..fused import ndcg10


class SequenceComponentConfig(ComponentConfig):
    # item vectors the text path reads: llm | minilm | none | auto (llm, else minilm, else none) |
    # choose (a short trial of auto's vectors and of none, scored on validation; the winner is trained fully)
    text: str = "auto"
    model: dict[str, Any] = {"epochs": 30, "patience": 3, "id_dropout": 0.1}
    valid_cases: int = 300  # validation cases scored after each epoch for early stopping
    # text=choose: each trial runs the full fit's schedule for choice_epochs epochs (None: choice_share of the planned
    # epochs, at least one), or until it has spent its half of choice_budget_s; the winner goes on from its trial
    choice_epochs: int | None = None
    choice_share: float = Field(default=1 / 3, gt=0.0, le=1.0)
    choice_budget_s: float = Field(default=600.0, ge=0.0)
    text_choice: dict[str, Any] | None = None  # text=choose: set by fit (chosen, runner-up, each trial's NDCG@10)


class SequenceComponent(Component):
    """SASRec-style: P(u,i) = sigmoid(<h_u, h_i>), h_u from the request's history, never a user embedding."""

    name = "sequence"
    kind = "learned"
    config_class = SequenceComponentConfig
    config: SequenceComponentConfig
    trains_on_ray = True  # the final training; text=choose's short trials stay in the driver

    def _text(self) -> str | None:
        kind = self.config.text
        if kind in ("auto", "choose"):
            kind = next((k for k in ("llm", "minilm") if k in self.space.vectors), "none")
        return None if kind == "none" else kind

    def fit(self, data: TrainingData) -> Component:
        from .sequence_model import SequenceModel, SequenceModelConfig  # torch: optional (the [torch] extra)

        text = self._text()
        cfg = SequenceModelConfig(**{"seed": data.seed, **self.config.model, "use_text": text is not None})
        cases = data.validation[: self.config.valid_cases]
        valid_fn: Callable[[Any], float] | None = None
        if cases:
            reqs = [c.request for c in cases]
            gt = [c.ground_truth_index for c in cases]

            def validate(model: Any) -> float:
                return self._ndcg_of(model, reqs, gt)

            valid_fn = validate

        sequences = [s.tolist() for s in data.sequences]
        choice, resume = None, None
        with tempfile.TemporaryDirectory(prefix="sequence-choice-") as work:
            if self.config.text == "choose" and text is not None and valid_fn is not None:
                text, choice = self._choose(text, sequences, cfg, valid_fn, Path(work), len(cases),
                                            data.cold_validation[: self.config.valid_cases])
                cfg = cfg.model_copy(update={"use_text": text is not None})
                # the winner goes on from its trial's last epoch, on the same schedule (on Ray it starts over)
                resume = Path(work) / (text or "none") if data.ray is None else None
                choice["continued_from_trial"] = resume is not None
            vectors = self.space.vectors[text] if text else None
            self.config = self.config.model_copy(update={"text": text or "none", "text_choice": choice})
            label = f"sequence model, chosen: text {text or 'none'}" if choice else True
            self.model = SequenceModel.fit(sequences, len(self.space), vectors, cfg, valid_fn=valid_fn,
                                           progress=label, ray=data.ray, checkpoint_dir=resume)
        self.ray_train = self.model.record.get("ray")
        if choice is not None:
            self.model.record["text_choice"] = choice
        return self

    def _choose(self, text: str, sequences: list[list[int]], cfg: Any, valid_fn: Callable[[Any], float],
                work: Path, n_warm: int, cold_cases: list[Any]) -> tuple[str | None, dict[str, Any]]:
        """Train each option (``text`` vectors, none) on the full fit's schedule for the first part of its planned
        epochs, within the time budget; the better validation wins. Each trial leaves a checkpoint in
        ``work/<option>``, from which the winner's full fit goes on. With ``cold_cases`` (cold items kept out of
        training) the choice weighs them beside the warm cases: an ID-only model cannot rank an item it never saw."""
        from .sequence_model import SequenceModel

        options: list[str | None] = [text, None]
        share = self.config.choice_budget_s / len(options)
        trials: dict[str, dict[str, Any]] = {}
        for kind in options:
            vectors = self.space.vectors[kind] if kind else None
            self.config = self.config.model_copy(update={"text": kind or "none"})  # how validation scores it
            t0 = time.perf_counter()

            def pause(done: int, planned: int, t0: float = t0) -> bool:
                want = self.config.choice_epochs or max(1, math.ceil(planned * self.config.choice_share))
                return done >= want or time.perf_counter() - t0 >= share

            model = SequenceModel.fit(sequences, len(self.space), vectors,
                                      cfg.model_copy(update={"use_text": kind is not None}), valid_fn=valid_fn,
                                      progress=f"sequence model, trial: text {kind or 'none'}",
                                      checkpoint_dir=work / (kind or "none"), pause=pause)
            warm = float(model.record["best_valid"])
            trial = {"valid_ndcg@10": round(warm, 4), "epochs": model.record["epochs_run"]}
            if cold_cases:  # the trial's best weights on the cold cases; the choice weighs every case alike
                cold = self._ndcg_of(model, [c.request for c in cold_cases], [c.ground_truth_index for c in cold_cases])
                trial["cold_ndcg@10"] = round(cold, 4)
                trial["choice_ndcg@10"] = round((warm * n_warm + cold * len(cold_cases))
                                                / (n_warm + len(cold_cases)), 4)
            trials[kind or "none"] = {**trial, "seconds": round(time.perf_counter() - t0, 1)}
        self.config = self.config.model_copy(update={"text": "choose"})
        key = "choice_ndcg@10" if cold_cases else "valid_ndcg@10"
        ranked = sorted(trials, key=lambda k: -trials[k][key])  # stable: a tie keeps the text option
        chosen = ranked[0]
        return (None if chosen == "none" else chosen), {"chosen": chosen, "runner_up": ranked[1], "trials": trials}

    def _ndcg_of(self, model: Any, requests: list[Any], gt: list[int]) -> float:
        """NDCG@10 of ``model`` on validation requests, scored as this component serves it (its ``text`` setting)."""
        self.model = model
        return ndcg10(self.score_many(requests), gt)

    def score_many(self, requests):  # type: ignore[no-untyped-def]
        scores = self.score_items([r.history for r in requests], [r.candidates for r in requests])
        return [ScoreResult(scores=s, probabilities=self.probabilities(s), history_used=len(r.history))
                for r, s in zip(requests, scores)]

    def score_items(self, histories: list[Sequence[Item]], candidates: list[Sequence[Item]]) -> list[np.ndarray]:
        """The logits of each candidate list after its history, one padded pass. Items the bundle has not seen
        go in through their text vectors; an ID-only model knows nothing of them: they score lowest and the
        history skips them."""
        text = self._text()
        hist = [self.space.rows(h) for h in histories]
        cand = [self.space.rows(c) for c in candidates]
        hv = cv = None
        if text is not None:
            hv = [self.space.vectors_for(text, items, h) if (h < 0).any() else None for items, h in zip(histories, hist)]
            cv = [self.space.vectors_for(text, items, c) if (c < 0).any() else None
                  for items, c in zip(candidates, cand)]
        if text is None:
            hist = [h[h >= 0] for h in hist]
        logits = self.model.score(hist, [np.where(c >= 0, c, 0) if text is None else c for c in cand], cv, hv)
        out = []
        for c, s in zip(cand, logits):
            s = np.asarray(s, dtype=float)
            if text is None:
                s = np.where(c >= 0, s, s.min() - 1.0 if len(s) else 0.0)
            out.append(s)
        return out

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # score_many batches every request in one padded pass

    def save_state(self, folder: Path) -> None:
        self.model.save(folder / "model")

    def load_state(self, folder: Path) -> None:
        from .sequence_model import SequenceModel  # torch: optional (the [torch] extra)

        self.model = SequenceModel.load(folder / "model")
