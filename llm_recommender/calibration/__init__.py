"""Calibration layer: maps raw strategy outputs to interest probabilities P(user, item).

Calibrators (registered by name, JSON round-trip through ``save``/``load_calibrator``):
``identity``, ``platt``, ``temperature``, ``isotonic`` and ``logistic`` (the feature
model, which doubles as the hybrid scorer: see :mod:`.hybrid`).
"""

from .base import (
    CALIBRATORS,
    Calibrator,
    IdentityCalibrator,
    calibrator_class,
    calibrator_from_dict,
    check_fitted_for,
    load_calibrator,
    register_calibrator,
)
from .features import FeatureSet
from .fitting import fit_calibrator, flatten_results
from .isotonic import IsotonicCalibrator
from .logistic import FeatureLogisticCalibrator
from .platt import PlattCalibrator
from .temperature import TemperatureCalibrator

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "FeatureLogisticCalibrator",
    "FeatureSet",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "calibrator_class",
    "calibrator_from_dict",
    "check_fitted_for",
    "fit_calibrator",
    "flatten_results",
    "load_calibrator",
    "register_calibrator",
]
