"""The ``Calibrator`` seam: raw scores/probabilities -> calibrated P(user likes item).

A calibrator sees, per request, the strategy's raw ``scores`` and its uncalibrated
``probabilities`` (the model's own distribution) and returns probabilities in [0, 1].
Fitted calibrators are saved to and loaded from a small JSON file
(``{"type": "<name>", ...parameters}``).
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidRequestError, UnknownNameError

CALIBRATORS: dict[str, type["Calibrator"]] = {}


def register_calibrator(cls: type["Calibrator"]) -> type["Calibrator"]:
    CALIBRATORS[cls.name] = cls
    return cls


class Calibrator(abc.ABC):
    name: ClassVar[str] = "base"

    @abc.abstractmethod
    def transform(self, scores: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for one request's candidates."""

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "Calibrator":
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, **self.params()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


@register_calibrator
class IdentityCalibrator(Calibrator):
    """The model's own (renormalised) probability, unchanged."""

    name = "identity"

    def transform(self, scores: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)


@register_calibrator
class PlattCalibrator(Calibrator):
    """Platt scaling on the raw score: sigmoid(a * score + b)."""

    name = "platt"

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        self.a, self.b = float(a), float(b)

    def transform(self, scores: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        z = self.a * np.asarray(scores, dtype=float) + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}


def calibrator_from_dict(data: dict[str, Any], *, source: str = "calibrator") -> Calibrator:
    if not isinstance(data, dict) or "type" not in data:
        raise InvalidRequestError(f"{source}: expected a JSON object with a 'type' field", param="calibrator")
    params = dict(data)
    kind = params.pop("type")
    if kind not in CALIBRATORS:
        raise UnknownNameError("calibrator", str(kind), CALIBRATORS, param="calibrator")
    try:
        return CALIBRATORS[kind].from_params(params)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{source}: bad parameters for {kind!r}: {exc}", param="calibrator") from None


def load_calibrator(path: str | Path) -> Calibrator:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequestError(f"calibrator file {p} does not exist", param="calibrator") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"calibrator file {p} is not valid JSON: {exc}", param="calibrator") from None
    return calibrator_from_dict(data, source=str(p))
