"""Calibration layer: maps raw strategy outputs to interest probabilities P(user, item)."""

from .base import CALIBRATORS, Calibrator, IdentityCalibrator, PlattCalibrator, calibrator_from_dict, load_calibrator, register_calibrator

__all__ = ["CALIBRATORS", "Calibrator", "IdentityCalibrator", "PlattCalibrator", "calibrator_from_dict", "load_calibrator", "register_calibrator"]
