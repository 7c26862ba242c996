"""The ``Calibrator`` seam: raw scores/probabilities -> calibrated P(user likes item).

A calibrator sees, per request, the strategy's raw ``scores`` and its uncalibrated
``probabilities`` (the model's own distribution) and returns probabilities in [0, 1].
Fitted calibrators are saved to and loaded from a small JSON file
(``{"type": "<name>", ...parameters}``).

Fitting (``Calibrator.fit``) takes flat arrays, one row per (request, candidate), built
from *validation* cases only; :func:`~llm_recommender.calibration.fitting.fit_calibrator`
builds them from ``ScoreResult`` lists. The feature model (``logistic``) reads named
feature columns instead of one score: ``transform_features(FeatureSet)``. Single-score
calibrators accept a ``FeatureSet`` too, reading its ``score``/``probability`` columns.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..configurable import ComponentConfig, Configurable
from ..errors import InvalidRequestError, UnknownNameError
from ._math import calibrator_input, check_finite, check_labels, check_source
from .features import FeatureSet

CALIBRATORS: dict[str, type[Calibrator]] = {}


_C = TypeVar("_C", bound="type[Calibrator]")


def register_calibrator(cls: _C) -> _C:
    CALIBRATORS[cls.name] = cls
    return cls


class Calibrator(Configurable, abc.ABC):
    """A calibrator's parameters are its ``config`` (what its JSON file stores besides ``type``).

    Construct it from a config object, a dict, keyword arguments, or positional values in
    the config's field order (``PlattCalibrator(2.0, -1.0)``); ``fit`` returns a new one.
    """

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    # What the scores it was fitted on came from: {"strategy", "model", "template_hash"}
    # (Recommender.calibration_key). Saved with it; loading it for anything else is an error.
    fitted_for: dict[str, str] | None = None

    def __init__(self, *args: Any, config: ComponentConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if args and config is None and isinstance(args[0], (ComponentConfig, dict)):
            config, args = args[0], args[1:]
        names = list(self.config_class.model_fields)
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes at most {len(names)} positional values ({', '.join(names)})")
        self.config = self.validate_config(config, {**dict(zip(names, args)), **kwargs})
        self._from_config()

    def _from_config(self) -> None:
        """The config's values as attributes (``cal.a``); a calibrator with derived state (arrays) overrides this."""
        for field in type(self.config).model_fields:
            setattr(self, field, getattr(self.config, field))

    @abc.abstractmethod
    def transform(self, scores: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for one request's candidates."""

    def transform_features(self, features: FeatureSet) -> np.ndarray:
        """Calibrated probabilities from named feature columns (one row per candidate).

        Single-score calibrators read the ``score`` and ``probability`` columns; the
        feature model overrides this.
        """
        return self.transform(features.column("score"), features.column("probability"))

    @classmethod
    def fit(
        cls,
        scores: np.ndarray,
        labels: np.ndarray,
        *,
        probabilities: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        **options: Any,
    ) -> Calibrator:
        """Fit on flat validation arrays (``groups``: request index per row); returns a new calibrator."""
        raise NotImplementedError(f"calibrator {cls.name!r} cannot be fitted")

    def params(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Calibrator:
        return cls(config=params)

    def to_dict(self) -> dict[str, Any]:
        meta = {"fitted_for": dict(self.fitted_for)} if self.fitted_for else {}
        return {"type": self.name, **self.params(), **meta}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class SingleScoreCalibrator(Calibrator):
    """A calibrator of one number per candidate: the raw score, or the model's log-probability or logit (``source``).

    Reading and checking that input lives here once; a subclass maps it (``calibrate``) and fits on it (``fit_input``).
    """

    source: str = "score"

    @abc.abstractmethod
    def calibrate(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from the 1-D input."""

    def transform(self, scores: np.ndarray, probabilities: np.ndarray | None = None) -> np.ndarray:
        return self.calibrate(calibrator_input(self.source, scores, probabilities))

    @classmethod
    def default_source(cls, **options: Any) -> str:
        return "score"

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, *, source: str | None = None,
            probabilities: np.ndarray | None = None, **options: Any) -> Calibrator:
        source = check_source(source or cls.default_source(**options))
        x = check_finite(calibrator_input(source, scores, probabilities), "scores")
        return cls.fit_input(x, check_labels(labels, x.shape[0]), source=source, **options)

    @classmethod
    @abc.abstractmethod
    def fit_input(cls, x: np.ndarray, y: np.ndarray, *, source: str, **options: Any) -> Calibrator:
        """Fit on the checked input ``x`` and 0/1 labels ``y`` (``groups`` in options: request index per row)."""


class IdentityConfig(ComponentConfig):
    pass


@register_calibrator
class IdentityCalibrator(Calibrator):
    """The model's own (renormalised) probability, unchanged."""

    name = "identity"
    config_class = IdentityConfig

    def transform(self, scores: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)

    @classmethod
    def fit(cls, scores: np.ndarray, labels: np.ndarray, **_: Any) -> IdentityCalibrator:
        return cls()


def calibrator_class(name: str) -> type[Calibrator]:
    """The registered calibrator class ``name``; an unknown name is an error listing the valid ones."""
    if not isinstance(name, str) or name not in CALIBRATORS:
        raise UnknownNameError("calibrator", str(name), CALIBRATORS, param="calibrator")
    return CALIBRATORS[name]


def calibrator_from_dict(data: dict[str, Any], *, source: str = "calibrator") -> Calibrator:
    if not isinstance(data, dict) or "type" not in data:
        raise InvalidRequestError(f"{source}: expected a JSON object with a 'type' field", param="calibrator")
    params = dict(data)
    kind = params.pop("type")
    fitted_for = params.pop("fitted_for", None)
    cls = calibrator_class(kind)
    if fitted_for is not None and not (isinstance(fitted_for, dict) and all(isinstance(v, str) for v in fitted_for.values())):
        raise InvalidRequestError(f"{source}: 'fitted_for' must be an object of strings", param="calibrator")
    try:
        cal = cls.from_params(params)
    except InvalidRequestError as exc:  # names the field: "platt.zz"
        raise InvalidRequestError(f"{source}: bad parameters for {kind!r}: {exc.message}", param="calibrator",
                                  field=exc.param) from None
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{source}: bad parameters for {kind!r}: {exc}", param="calibrator") from None
    cal.fitted_for = fitted_for
    return cal


def check_fitted_for(cal: Calibrator, expected: dict[str, str], *, param: str = "calibrator") -> None:
    """A typed error when ``cal`` was fitted for another strategy, model or prompt templates.

    A calibrator without the record (fitted in code, or an older file) is trusted as given.
    """
    if not cal.fitted_for:
        return
    words = {"strategy": "strategy", "model": "model", "template_hash": "prompt templates (hash)"}
    wrong = [
        f"{words.get(k, k)} {cal.fitted_for[k]!r}, not {v!r}"
        for k, v in expected.items()
        if k in cal.fitted_for and cal.fitted_for[k] != v
    ]
    if wrong:
        raise InvalidRequestError(
            f"calibrator {cal.name!r} was fitted for {'; '.join(wrong)}: its probabilities would be wrong here; "
            "fit one for this strategy, model and templates",
            param=param,
        )


def load_calibrator(path: str | Path) -> Calibrator:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequestError(f"calibrator file {p} does not exist", param="calibrator") from None
    except OSError as exc:  # a directory, no permission, ...
        raise InvalidRequestError(f"calibrator file {p} cannot be read: {exc}", param="calibrator") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"calibrator file {p} is not valid JSON: {exc}", param="calibrator") from None
    return calibrator_from_dict(data, source=str(p))
