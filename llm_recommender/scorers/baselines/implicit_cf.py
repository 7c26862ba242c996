"""Trained collaborative filtering from the ``implicit`` library: ALS, BPR and item-kNN (the ``cf`` extra).

Each is a model (``ALSModel``, ...) fitted on training interactions only (``fit(users, items)``,
one row per interaction), and a bundle component (``ALSComponent``, ...) that fits it on the
bundle's training split and scores requests with it. Repeated interactions count once: the user-item matrix is binary CSR.

Scoring uses the request's history alone, never a stored user, so a saved model holds
item-side data only (item ids, item factors or the item-item similarity matrix, and the
config): no user factors and no user ids. A request's user vector is *folded in*:

* ``als``: the exact ALS user update on the trained item factors ``Y`` (what implicit's
  ``recalculate_user`` computes): ``x = (Y^T Y + (alpha - 1) Y_h^T Y_h + reg I)^-1 alpha Y_h^T 1``
  over the distinct known history items ``h`` (implicit 0.7: confidence = alpha * value);
* ``bpr``: implicit's BPR has no fold-in (``recalculate_user`` raises), so the same
  weighted least squares is solved on BPR's item factors (without the bias column), and
  the item biases are added to the scores; ``fold_in_regularization``,
  ``fold_in_confidence`` and ``fold_in_bias_offset`` (biases subtracted from the targets
  too) are its own settings, chosen on validation;
* ``itemknn``: the sum (or mean) over history items of the kept top-``K`` similarities
  ``S[h, c]``, which is what implicit's ``recommend`` computes for a user row.

``score`` is the model's score; ``probability`` a monotone map into [0, 1] (sigmoid for
the factor models, ``s / (1 + s)`` for item-kNN), to be calibrated before it is read as a
probability. Items not in training get ``UNKNOWN_SCORE`` (below any score in practice) and
probability 0, with a note.

``implicit`` is imported only by ``fit`` (an optional package); a loaded model scores with numpy and scipy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, Field
from scipy import sparse

from ...configurable import ComponentConfig, Configurable
from ...errors import InvalidRequestError
from ...protocol import RankRequest
from ..base import ScoreResult
from ..component import Component, TrainingData

UNKNOWN_SCORE = -1e6
FORMAT_VERSION = 1


class _Config(ComponentConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    num_threads: int = Field(default=1, ge=0, description="implicit's OpenMP threads (0 = all cores)")


class ALSConfig(_Config):
    factors: int = Field(default=64, ge=1)
    regularization: float = Field(default=0.01, ge=0)
    alpha: float = Field(
        default=1.0, gt=0, description="confidence of an observed interaction (implicit 0.7: alpha * 1)"
    )
    iterations: int = Field(default=15, ge=1)


class BPRConfig(_Config):
    factors: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=0.01, gt=0)
    regularization: float = Field(default=0.01, ge=0)
    iterations: int = Field(default=100, ge=1)
    fold_in_regularization: float = Field(default=100.0, gt=0)
    fold_in_confidence: float = Field(default=100.0, gt=0, description="weight of history items in the fold-in")
    fold_in_bias_offset: bool = Field(
        default=False,
        description="subtract the item biases from the fold-in targets (else they are only added to scores)",
    )


class ItemKNNConfig(_Config):
    K: int = Field(default=50, ge=1, description="neighbours kept per item")
    weighting: Literal["cosine", "tfidf", "bm25"] = "cosine"
    K1: float = Field(default=1.2, gt=0, description="bm25 only")
    B: float = Field(default=0.75, ge=0, le=1, description="bm25 only")
    aggregate: Literal["sum", "mean"] = "sum"


def _user_item_matrix(users: Sequence[Any], items: Sequence[Any]) -> tuple[Any, np.ndarray, np.ndarray]:
    """Binary users x items CSR matrix, the sorted item ids, and the sorted user ids."""
    u = np.asarray([str(x) for x in users])
    i = np.asarray([str(x) for x in items])
    if u.shape != i.shape:
        raise InvalidRequestError(f"{u.shape[0]} users for {i.shape[0]} items", param="users")
    if u.size == 0:
        raise InvalidRequestError("no training interactions", param="items")
    user_ids, u_idx = np.unique(u, return_inverse=True)
    item_ids, i_idx = np.unique(i, return_inverse=True)
    X = sparse.csr_matrix((np.ones(len(u_idx), dtype=np.float32), (u_idx, i_idx)), shape=(len(user_ids), len(item_ids)))
    X.data[:] = 1.0  # duplicates were summed; an interaction counts once per user
    return X, item_ids, user_ids


def fold_in(
    V: np.ndarray,
    hist: Sequence[int],
    regularization: float,
    confidence: float,
    offset: np.ndarray | None = None,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """The implicit-feedback least-squares user vector for item factors ``V`` (items x f).

    Minimises ``sum_i c_i (p_i - offset_i - x . v_i)^2 + reg |x|^2`` with ``p_i = 1`` and
    ``c_i = confidence`` on the history items, ``p_i = 0`` and ``c_i = 1`` elsewhere. With no
    offset this is implicit 0.7's ALS user step (``recalculate_user``), whose confidence for
    a 0/1 matrix is ``alpha``. ``gram`` is ``V^T V`` when the caller has it cached.
    """
    V = np.asarray(V, dtype=np.float64)
    f = V.shape[1]
    if len(hist) == 0:
        return np.zeros(f)
    h = list(hist)
    Vh = V[h]
    A = (V.T @ V if gram is None else gram) + (confidence - 1.0) * (Vh.T @ Vh) + regularization * np.eye(f)
    rhs = confidence * Vh.sum(axis=0)
    if offset is not None:
        b = np.asarray(offset, dtype=np.float64)
        rhs -= V.T @ b + (confidence - 1.0) * (Vh.T @ b[h])
    return np.linalg.solve(A, rhs)


class ImplicitModel(Configurable):
    """Shared parts: config, fit bookkeeping, candidate lookup, save/load of item-side arrays."""

    name: ClassVar[str]
    config_class: ClassVar[type[_Config]]
    item_factors: np.ndarray  # ALS and BPR: set by fit or load

    def __init__(self, config: _Config | dict[str, Any] | None = None, **options: Any) -> None:
        self.config = self.validate_config(config, options)
        self._item_index: dict[str, int] | None = None
        self.fit_seconds: float | None = None
        self.user_factors_: np.ndarray | None = None  # kept in memory after fit for comparison; never saved
        self.user_index_: dict[str, int] | None = None
        self._gram_cache: np.ndarray | None = None

    def is_fitted(self) -> bool:
        return self._item_index is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise InvalidRequestError(f"{self.name} must be fitted on training interactions before scoring "
                                      "(call .fit(...))", param="scorer")

    @property
    def item_ids(self) -> list[str]:
        self._check_fitted()
        assert self._item_index is not None
        return list(self._item_index)

    def fit(self, users: Sequence[Any], items: Sequence[Any]) -> ImplicitModel:
        """One row per training interaction: ``users[j]`` interacted with ``items[j]``."""
        X, item_ids, user_ids = _user_item_matrix(users, items)
        start = time.perf_counter()
        self._fit_matrix(X)
        self._gram_cache = None
        self.fit_seconds = time.perf_counter() - start
        self._item_index = {k: j for j, k in enumerate(item_ids.tolist())}
        self.user_index_ = {k: j for j, k in enumerate(user_ids.tolist())} if self.user_factors_ is not None else None
        return self

    def _fit_matrix(self, X: Any) -> None:
        raise NotImplementedError

    def _raw_scores(self, hist: list[int], cols: np.ndarray, user_vector: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(scores, -50.0, 50.0)))

    def score_many(
        self, requests: list[RankRequest], user_vectors: Sequence[np.ndarray | None] | None = None
    ) -> list[ScoreResult]:
        """``user_vectors`` (factor models, evaluation only) replaces the fold-in with given user
        factors, e.g. the trained ones from :meth:`trained_user_vector`."""
        self._check_fitted()
        assert self._item_index is not None
        if user_vectors is not None and len(user_vectors) != len(requests):
            raise InvalidRequestError(f"{len(user_vectors)} user vectors for {len(requests)} requests", param="users")
        out = []
        for k, request in enumerate(requests):
            hist = sorted({self._item_index[h.id] for h in request.history if h.id in self._item_index})
            cand = np.array([self._item_index.get(c.id, -1) for c in request.candidates])
            known = np.flatnonzero(cand >= 0)
            scores = np.full(len(cand), UNKNOWN_SCORE)
            probs = np.zeros(len(cand))
            given = None if user_vectors is None else user_vectors[k]
            if known.size:
                scores[known] = self._raw_scores(hist, cand[known], given)
                probs[known] = self._probabilities(scores[known])
            notes = []
            if not hist and given is None:
                notes.append("no history item occurs in the training interactions; scores carry no preference")
            if known.size < len(cand):
                notes.append(
                    f"{len(cand) - known.size} candidate(s) not in the training interactions score {UNKNOWN_SCORE}"
                )
            details = self._history_links(request, hist, cand, known) if known.size and hist else {}
            out.append(ScoreResult(scores=scores, probabilities=probs, history_used=len(hist), notes=notes,
                                   details=details))
        return out

    def _history_links(self, request: RankRequest, hist: list[int], cand: np.ndarray, known: np.ndarray) -> dict[str, Any]:
        """Per history item, its part of each candidate's score (the evidence behind it); factor models: none."""
        return {}

    def score(self, request: RankRequest) -> ScoreResult:
        return self.score_many([request])[0]

    def _gram(self) -> np.ndarray:
        """``V^T V`` of the factors the fold-in uses (BPR: without the bias column), computed once."""
        gram = self._gram_cache
        if gram is None:
            V = self._fold_in_factors()
            gram = self._gram_cache = V.T @ V
        return gram

    def _fold_in_factors(self) -> np.ndarray:
        return self.item_factors

    def trained_user_vector(self, user_id: str) -> np.ndarray | None:
        """The fitted factors of a training user (evaluation only; None for unknown users or item-kNN)."""
        if self.user_factors_ is None or self.user_index_ is None:
            return None
        j = self.user_index_.get(str(user_id))
        return None if j is None else self.user_factors_[j]

    # ---- persistence: item-side data only --------------------------------------------

    def _arrays(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_arrays(self, folder: Path) -> None:
        raise NotImplementedError

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``items.json`` (item ids) and the model's item-side arrays."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in self._arrays().items():
            if hasattr(array, "tocsr"):
                sparse.save_npz(folder / f"{name}.npz", array.tocsr(), compressed=True)
            else:
                np.save(folder / f"{name}.npy", np.asarray(array), allow_pickle=False)
        (folder / "items.json").write_text(json.dumps(self.item_ids))
        meta = {"format_version": FORMAT_VERSION, "scorer": self.name, "config": self.config.model_dump()}
        (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ImplicitModel:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text())
            item_ids = json.loads((folder / "items.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidRequestError(
                f"cannot read a saved {cls.name} model from {folder}: {exc}", param="path"
            ) from None
        if meta.get("scorer") != cls.name or meta.get("format_version") != FORMAT_VERSION:
            raise InvalidRequestError(
                f"{folder} holds a {meta.get('scorer')!r} model (format {meta.get('format_version')}), "
                f"not {cls.name!r} (format {FORMAT_VERSION})",
                param="path",
            )
        model = cls(meta["config"])
        try:
            model._set_arrays(folder)
        except (OSError, ValueError) as exc:
            raise InvalidRequestError(
                f"cannot read a saved {cls.name} model from {folder}: {exc}", param="path"
            ) from None
        model._item_index = {str(k): j for j, k in enumerate(item_ids)}
        model._gram_cache = None
        return model


class _FactorModel(ImplicitModel):
    """ALS and BPR: item factors saved, the trained user factors kept in memory only (evaluation)."""

    def _options(self) -> dict[str, Any]:
        """What implicit's ALS and BPR constructors share."""
        c: Any = self.config
        return {"factors": c.factors, "regularization": c.regularization, "iterations": c.iterations,
                "random_state": c.seed, "num_threads": c.num_threads}

    def _keep_factors(self, model: Any) -> None:
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float64)

    def _arrays(self) -> dict[str, Any]:
        return {"item_factors": self.item_factors}

    def _set_arrays(self, folder: Path) -> None:
        self.item_factors = np.load(folder / "item_factors.npy", allow_pickle=False)


class ALSModel(_FactorModel):
    name = "als"
    config_class = ALSConfig
    config: ALSConfig

    def _fit_matrix(self, X: Any) -> None:
        from implicit.als import AlternatingLeastSquares  # optional: the [cf] extra, to fit only
        from threadpoolctl import threadpool_limits

        # implicit's own advice: multithreaded BLAS inside its solver makes ALS slower. The model is
        # built inside the limit too: its constructor checks the BLAS threads and warns otherwise.
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(alpha=self.config.alpha, **self._options())
            model.fit(X, show_progress=False)
        self._keep_factors(model)

    def _raw_scores(self, hist: list[int], cols: np.ndarray, user_vector: np.ndarray | None) -> np.ndarray:
        c = self.config
        if user_vector is None:
            user_vector = fold_in(self.item_factors, hist, c.regularization, c.alpha, gram=self._gram())
        return self.item_factors[cols] @ user_vector


class BPRModel(_FactorModel):
    name = "bpr"
    config_class = BPRConfig
    config: BPRConfig

    def _fit_matrix(self, X: Any) -> None:
        from implicit.bpr import BayesianPersonalizedRanking  # optional: the [cf] extra, to fit only

        model = BayesianPersonalizedRanking(learning_rate=self.config.learning_rate, **self._options())
        model.fit(X, show_progress=False)
        self._keep_factors(model)  # implicit appends the item bias as the last item column, a constant 1 to each user

    def _fold_in_factors(self) -> np.ndarray:
        return self.item_factors[:, :-1]  # the last column is the item bias

    def _raw_scores(self, hist: list[int], cols: np.ndarray, user_vector: np.ndarray | None) -> np.ndarray:
        V, bias = self.item_factors[:, :-1], self.item_factors[:, -1]
        if user_vector is not None:
            return self.item_factors[cols] @ user_vector
        c = self.config
        offset = bias if c.fold_in_bias_offset else None
        x = fold_in(V, hist, c.fold_in_regularization, c.fold_in_confidence, offset=offset, gram=self._gram())
        return V[cols] @ x + bias[cols]

class ItemKNNModel(ImplicitModel):
    name = "itemknn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig

    def _fit_matrix(self, X: Any) -> None:
        from implicit import nearest_neighbours as nn  # optional: the [cf] extra, to fit only

        c = self.config
        # implicit's Cosine/TFIDF/BM25 recommenders weight the items x users matrix and pass it on as
        # COO (it then warns and converts); the same weighting done here goes in as CSR.
        if c.weighting == "cosine":
            weighted = nn.normalize(X.T)
        elif c.weighting == "tfidf":
            weighted = nn.normalize(nn.tfidf_weight(X.T))
        else:
            weighted = nn.bm25_weight(X.T, c.K1, c.B)  # pyright: ignore[reportArgumentType]  (K1 is a float; implicit annotates int)
        model = nn.ItemItemRecommender(K=c.K, num_threads=c.num_threads)
        model.fit(weighted.T.tocsr(), show_progress=False)
        self.similarity = model.similarity.tocsr()  # pyright: ignore[reportOptionalMemberAccess]  (set by fit)
        self.user_factors_ = None

    def _raw_scores(self, hist: list[int], cols: np.ndarray, user_vector: np.ndarray | None) -> np.ndarray:
        if not hist:
            return np.zeros(len(cols))
        sims = np.asarray(self.similarity[hist][:, cols].sum(axis=0)).ravel()
        return sims / len(hist) if self.config.aggregate == "mean" else sims

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        s = np.maximum(scores, 0.0)
        return s / (1.0 + s)

    def _history_links(self, request: RankRequest, hist: list[int], cand: np.ndarray, known: np.ndarray) -> dict[str, Any]:
        strength = np.zeros((len(hist), len(cand)), dtype=np.float32)
        strength[:, known] = self.similarity[hist][:, cand[known]].toarray()
        assert self._item_index is not None
        id_of = {self._item_index[h.id]: h.id for h in request.history if h.id in self._item_index}  # not the catalogue's
        return {"history_links": {"key": "cooccurring", "history": [id_of[r] for r in hist], "strength": strength}}

    def neighbours(self, history: list[str], candidate: str, k: int = 6) -> list[tuple[str, float]]:
        """The history items whose similarity to ``candidate`` makes up its score, largest first (the
        score is their sum): the evidence behind an item-kNN ranking."""
        assert self._item_index is not None
        j = self._item_index.get(candidate)
        rows = [(h, self._item_index[h]) for h in dict.fromkeys(history) if h in self._item_index]
        if j is None or not rows:
            return []
        sims = self.similarity[[r for _, r in rows]][:, [j]].toarray().ravel()
        order = np.argsort(-sims, kind="stable")
        return [(rows[t][0], float(sims[t])) for t in order[:k] if sims[t] > 0]

    def _arrays(self) -> dict[str, Any]:
        return {"similarity": self.similarity}

    def _set_arrays(self, folder: Path) -> None:
        self.similarity = sparse.load_npz(folder / "similarity.npz").tocsr()


# ---- the bundle components ------------------------------------------------------------------


class CFComponentConfig(ComponentConfig):
    options: dict[str, Any] = {}  # the model's config (``ALSConfig``, ...); defaults: the subclass's


class _CFComponent(Component):
    """implicit's model: item-side factors / similarities; the user side is folded in from the history."""

    kind = "cf"
    config_class = CFComponentConfig
    config: CFComponentConfig
    model_class: ClassVar[type[ImplicitModel]]
    model: ImplicitModel

    def fit(self, data: TrainingData) -> Component:
        users, rows = data.pairs()
        self.model = self.model_class(self.config.options).fit(users.tolist(), [self.space.items[r].id for r in rows])
        return self

    def score_many(self, requests: list[RankRequest]) -> list[ScoreResult]:
        out = self.model.score_many(requests)
        for res in out:  # items unseen in training: a neutral 0, not a -1e6 outlier in the fusion
            res.scores = np.where(res.scores <= UNKNOWN_SCORE, 0.0, res.scores)
        return out

    def score_rows(self, request, history, candidates):  # type: ignore[no-untyped-def]
        raise NotImplementedError  # score_many scores through the model

    def save_state(self, folder: Path) -> None:
        self.model.save(folder / "model")

    def load_state(self, folder: Path) -> None:
        self.model = self.model_class.load(folder / "model")


# Defaults: the configurations chosen on ML-100K validation by eval/bench_cf.py (eval/results/cf).
class ItemKNNComponentConfig(CFComponentConfig):
    options: dict[str, Any] = {"weighting": "bm25", "K": 1000}


class ALSComponentConfig(CFComponentConfig):
    options: dict[str, Any] = {"factors": 32, "regularization": 0.05, "alpha": 10.0, "iterations": 15}


class BPRComponentConfig(CFComponentConfig):
    options: dict[str, Any] = {"factors": 64, "learning_rate": 0.01, "iterations": 100,
                               "fold_in_regularization": 100.0, "fold_in_confidence": 100.0}


class ItemKNNComponent(_CFComponent):
    __doc__ = _CFComponent.__doc__
    name = "itemknn"
    model_class = ItemKNNModel
    config_class = ItemKNNComponentConfig

    def explain(self, request: RankRequest, index: int) -> dict[str, Any]:
        model: Any = self.model
        return {"cooccurring": model.neighbours([h.id for h in request.history], request.candidates[index].id)}


class ALSComponent(_CFComponent):
    __doc__ = _CFComponent.__doc__
    name = "als"
    model_class = ALSModel
    config_class = ALSComponentConfig


class BPRComponent(_CFComponent):
    __doc__ = _CFComponent.__doc__
    name = "bpr"
    model_class = BPRModel
    config_class = BPRComponentConfig
