"""Components that learn weights: the representation head (and, registered below, the
sequence model and implicit CF when their packages are importable)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..protocol import RankRequest
from ..representation.head import HeadConfig, RepresentationHead, train_head
from ..representation.training import user_vector
from ..scorers.base import ScoreResult
from .components import Component, ComponentConfig, TrainingData, register_component


class RepresentationHeadConfig(ComponentConfig):
    recency_decay: float = 0.9
    max_history: int = 50
    dim: int | None = 64  # PCA dimensions of h_i (label-free projection)
    l2: float = 1e-4
    epochs: int = 6
    lr: float = 3e-3
    negatives: int = 4
    contexts_per_user: int = 40
    min_history: int = 3
    seed: int = 0


@register_component
class RepresentationComponent(Component):
    """sigmoid(theta^T [h_u; h_i; h_u*h_i]) over the LLM's item representations (h_u from the history)."""

    name = "representation"
    kind = "text"
    config_class = RepresentationHeadConfig
    config: RepresentationHeadConfig
    head: RepresentationHead

    def fit(self, data: TrainingData) -> RepresentationComponent:
        cfg = self.config
        H = self.space.vectors["llm"]
        rng = np.random.default_rng(cfg.seed)
        n_items = len(self.space)
        hists, ex_c, ex_i, lab = [], [], [], []
        for seq in data.sequences:
            positions = np.arange(cfg.min_history, len(seq))
            if len(positions) > cfg.contexts_per_user:
                positions = np.sort(rng.choice(positions, size=cfg.contexts_per_user, replace=False))
            for t in positions:
                c = len(hists)
                hists.append(seq[max(0, t - cfg.max_history) : t])
                pos = int(seq[t])
                neg = rng.integers(0, n_items - 1, size=cfg.negatives)
                neg = neg + (neg >= pos)
                ex_c += [c] * (1 + cfg.negatives)
                ex_i += [pos, *neg.tolist()]
                lab += [1.0] + [0.0] * cfg.negatives
        U = np.stack([user_vector(H, h, cfg.recency_decay, cfg.max_history) for h in hists])
        head_cfg = HeadConfig(recency_decay=cfg.recency_decay, max_history=cfg.max_history, dim=cfg.dim, l2=cfg.l2,
                              epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed)
        self.head = train_head(head_cfg, U, H, np.asarray(ex_i), np.asarray(lab, dtype=np.float32), np.asarray(ex_c),
                               projection_items=np.arange(n_items))
        return self

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        cfg = self.config
        hist_items = request.history[-cfg.max_history :]
        h_i = self.space.vectors_for("llm", request.candidates, candidates)
        notes: list[str] = []
        if hist_items:
            h_h = self.space.vectors_for("llm", hist_items, history[-len(hist_items) :])
            u = user_vector(h_h, np.arange(len(hist_items)), cfg.recency_decay, cfg.max_history)
        else:
            u = np.zeros(h_i.shape[1], dtype=np.float32)
            notes.append("empty history: representation scores reflect the items alone")
        return self.head.logits(u, h_i).astype(float), notes, {}

    def save_state(self, folder: Path) -> None:
        self.head.save(folder / "head")

    def load_state(self, folder: Path) -> None:
        self.head = RepresentationHead.load(folder / "head")

    def describe(self) -> dict[str, Any]:
        return asdict(self.head.config)


# ---- trained collaborative filtering (implicit), scored by fold-in from the request's history ------


def _cf_component(scorer_name: str, defaults: dict[str, Any]) -> type[Component] | None:
    try:
        from ..baselines import implicit_cf
    except ImportError:  # the [cf] extra is not installed
        return None
    scorer_cls = {c.name: c for c in (implicit_cf.ALSScorer, implicit_cf.BPRScorer, implicit_cf.ItemKNNScorer)}[scorer_name]
    from pydantic import create_model

    config_cls = create_model(f"{scorer_cls.__name__}ComponentConfig", __base__=ComponentConfig,
                              options=(dict[str, Any], dict(defaults)))

    class CFComponent(Component):
        __doc__ = f"implicit {scorer_name}: item-side factors / similarities; the user side is folded in from the history."
        name = scorer_name
        kind = "cf"
        config_class = config_cls
        config: Any  # the model created above, with its one field ``options``
        scorer: Any

        def fit(self, data: TrainingData) -> Component:
            users, rows = data.pairs()
            ids = [self.space.items[r].id for r in rows]
            self.scorer = scorer_cls(self.config.options).fit(users.tolist(), ids)
            return self

        def score_many(self, requests):  # type: ignore[no-untyped-def]
            out = self.scorer.score_many(requests)
            for res in out:  # items unseen in training: a neutral 0, not a -1e6 outlier in the fusion
                res.scores = np.where(res.scores <= implicit_cf.UNKNOWN_SCORE, 0.0, res.scores)
            return out

        def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
            raise NotImplementedError  # score_many delegates to the implicit scorer

        def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
            if not hasattr(self.scorer, "neighbours"):  # factor models: no per-history-item decomposition
                return {}
            return {"cooccurring": self.scorer.neighbours([h.id for h in request.history], request.candidates[index].id)}

        def save_state(self, folder: Path) -> None:
            self.scorer.save(folder / "model")

        def load_state(self, folder: Path) -> None:
            self.scorer = scorer_cls.load(folder / "model")

    CFComponent.__name__ = f"{scorer_cls.__name__}Component"
    return register_component(CFComponent)


# Defaults: the configurations chosen on ML-100K validation by eval/bench_cf.py (eval/results/cf).
_cf_component("itemknn", {"weighting": "bm25", "K": 1000})
_cf_component("als", {"factors": 32, "regularization": 0.05, "alpha": 10.0, "iterations": 15})
_cf_component("bpr", {"factors": 64, "learning_rate": 0.01, "iterations": 100, "fold_in_regularization": 100.0,
                      "fold_in_confidence": 100.0})


# ---- the sequence model: h_u from a causal encoder over the history's h_i = ID embedding + text projection ----


class SequenceComponentConfig(ComponentConfig):
    text: str = "auto"  # item vectors the text path reads: llm | minilm | none | auto (llm, else minilm, else none)
    model: dict[str, Any] = {"epochs": 30, "patience": 3, "id_dropout": 0.1}
    valid_cases: int = 300  # validation cases scored after each epoch for early stopping


@register_component
class SequenceComponent(Component):
    """SASRec-style: P(u,i) = sigmoid(<h_u, h_i>), h_u from the request's history, never a user embedding."""

    name = "sequence"
    kind = "learned"
    config_class = SequenceComponentConfig
    config: SequenceComponentConfig

    def _text(self) -> str | None:
        kind = self.config.text
        if kind == "auto":
            kind = next((k for k in ("llm", "minilm") if k in self.space.vectors), "none")
        return None if kind == "none" else kind

    def fit(self, data: TrainingData) -> Component:
        from ..learned import SequenceModel, SequenceModelConfig
        from .fusion import ndcg10

        text = self._text()
        cfg = SequenceModelConfig(**{"seed": data.seed, **self.config.model, "use_text": text is not None})
        cases = data.validation[: self.config.valid_cases]
        valid_fn: Callable[[Any], float] | None = None
        if cases:
            reqs = [c.request for c in cases]
            gt = [c.ground_truth_index for c in cases]

            def validate(model: Any) -> float:
                self.model = model
                return ndcg10(self.score_many(reqs), gt)

            valid_fn = validate

        vectors = self.space.vectors[text] if text else None
        self.model = SequenceModel.fit([s.tolist() for s in data.sequences], len(self.space), vectors, cfg,
                                       valid_fn=valid_fn, progress=True)
        self.config = self.config.model_copy(update={"text": text or "none"})
        return self

    def score_many(self, requests):  # type: ignore[no-untyped-def]
        text = self._text()
        hist = [self.space.rows(r.history) for r in requests]
        cand = [self.space.rows(r.candidates) for r in requests]
        hv = cv = None
        if text is not None:
            hv = [self.space.vectors_for(text, r.history, h) if (h < 0).any() else None for r, h in zip(requests, hist)]
            cv = [self.space.vectors_for(text, r.candidates, c) if (c < 0).any() else None
                  for r, c in zip(requests, cand)]
        if text is None:  # an ID-only model knows nothing of unseen items: they score lowest, history skips them
            hist = [h[h >= 0] for h in hist]
        logits = self.model.score(hist, [np.where(c >= 0, c, 0) if text is None else c for c in cand], cv, hv)
        out = []
        for r, c, s in zip(requests, cand, logits):
            s = np.asarray(s, dtype=float)
            if text is None:
                s = np.where(c >= 0, s, s.min() - 1.0 if len(s) else 0.0)
            out.append(ScoreResult(scores=s, probabilities=self.probabilities(s), history_used=len(r.history)))
        return out

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # score_many batches every request in one padded pass

    def save_state(self, folder: Path) -> None:
        self.model.save(folder / "model")

    def load_state(self, folder: Path) -> None:
        from ..learned import SequenceModel

        self.model = SequenceModel.load(folder / "model")
