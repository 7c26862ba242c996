"""Platt, temperature and isotonic calibrators: fitted on a validation sample of a
synthetic miscalibrated model, judged on a separate test sample."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_recommender.calibration import (
    CALIBRATORS,
    IdentityCalibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    fit_calibrator,
    load_calibrator,
)
from llm_recommender.errors import ClientError, InvalidRequestError, UnknownNameError
from llm_recommender.scorers.base import ScoreResult
from llm_recommender.testing import CalibratorTests


def ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width bins (the last bin includes 1.0)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(p[m].mean() - y[m].mean())
    return float(total)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=float), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def pointwise_sample(seed: int, n: int = 4000, scale: float = 3.0, shift: float = 1.0):
    """True P = sigmoid(z); the model reports the overconfident, shifted log-odds scale*z + shift."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < sigmoid(z)).astype(float)
    s = scale * z + shift
    return s, sigmoid(s), y


def listwise_sample(seed: int, users: int = 400, n: int = 20, scale: float = 3.0):
    """One positive per request drawn from softmax(z); the model reports log softmax(scale * z)."""
    rng = np.random.default_rng(seed)
    results, labels = [], []
    for _ in range(users):
        z = rng.normal(size=n)
        true = np.exp(z) / np.exp(z).sum()
        y = np.zeros(n)
        y[rng.choice(n, p=true)] = 1.0
        p = np.exp(scale * z) / np.exp(scale * z).sum()
        results.append(ScoreResult(scores=np.log(p), probabilities=p, history_used=0))
        labels.append(y)
    return results, labels


def check_improves(cal, s, p, y):
    before = IdentityCalibrator().transform(s, p)
    after = cal.transform(s, p)
    assert np.all((after >= 0) & (after <= 1))
    assert ece(after, y) < ece(before, y) / 2
    assert log_loss(after, y) < log_loss(before, y)
    return after


def check_round_trip(cal, tmp_path, s, p):
    path = tmp_path / f"{cal.name}.json"
    cal.save(path)
    json.loads(path.read_text())  # plain JSON
    loaded = load_calibrator(path)
    assert type(loaded) is type(cal)
    assert loaded.to_dict() == cal.to_dict()
    assert np.array_equal(loaded.transform(s, p), cal.transform(s, p))


def test_registry_has_every_calibrator():
    assert {"identity", "platt", "temperature", "isotonic", "logistic"} <= set(CALIBRATORS)


def test_platt_fits_and_round_trips(tmp_path):
    s, p, y = pointwise_sample(0)
    cal = PlattCalibrator.fit(s, y)
    assert cal.a == pytest.approx(1 / 3, abs=0.05)
    assert cal.b == pytest.approx(-1 / 3, abs=0.1)
    s2, p2, y2 = pointwise_sample(1)  # judged on a different (test) sample
    after = check_improves(cal, s2, p2, y2)
    assert ece(after, y2) < 0.03
    check_round_trip(cal, tmp_path, s2, p2)


def test_platt_on_separable_data_stays_finite():
    s = np.array([-2.0, -1.0, 1.0, 2.0])
    cal = PlattCalibrator.fit(s, np.array([0, 0, 1, 1]))
    assert np.isfinite(cal.a) and cal.a > 0
    assert 0 < cal.transform(np.array([-5.0]))[0] < 0.5


def test_temperature_sigmoid_mode_for_pointwise_log_odds(tmp_path):
    s, p, y = pointwise_sample(0, shift=0.0)
    cal = TemperatureCalibrator.fit(s, y, probabilities=p, mode="sigmoid")
    assert cal.temperature == pytest.approx(3.0, rel=0.15)
    assert cal.source == "logit"
    s2, p2, y2 = pointwise_sample(1, shift=0.0)
    check_improves(cal, s2, p2, y2)
    check_round_trip(cal, tmp_path, s2, p2)


def test_temperature_softmax_mode_for_listwise_distributions(tmp_path):
    val, val_labels = listwise_sample(0)
    cal = fit_calibrator("temperature", val, val_labels)  # default: softmax over log-probabilities
    assert cal.mode == "softmax" and cal.source == "log_probability"
    assert cal.temperature == pytest.approx(3.0, rel=0.2)
    test, test_labels = listwise_sample(1)
    after = [cal.transform(r.scores, r.probabilities) for r in test]
    for a in after:
        assert a.sum() == pytest.approx(1.0)  # still a distribution over the request's candidates
    before = np.concatenate([r.probabilities for r in test])
    after_flat, y = np.concatenate(after), np.concatenate(test_labels)
    assert ece(after_flat, y) < ece(before, y)
    assert log_loss(after_flat, y) < log_loss(before, y)
    check_round_trip(cal, tmp_path, test[0].scores, test[0].probabilities)


def test_temperature_softmax_needs_groups():
    s, p, y = pointwise_sample(0, n=40)
    with pytest.raises(InvalidRequestError) as exc:
        TemperatureCalibrator.fit(s, y, probabilities=p)
    assert exc.value.param == "groups"


def test_isotonic_fits_monotone_breakpoints_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.random(4000)
    y = (rng.random(4000) < true).astype(float)
    p = true**3  # underconfident in a non-linear way: no sigmoid family fixes it exactly
    cal = IsotonicCalibrator.fit(p, y)
    assert np.all(np.diff(cal.x) >= 0) and np.all(np.diff(cal.y) >= 0)
    true2 = np.random.default_rng(1).random(4000)
    y2 = (np.random.default_rng(2).random(4000) < true2).astype(float)
    check_improves(cal, true2**3, true2**3, y2)
    check_round_trip(cal, tmp_path, true2**3, true2**3)


def test_isotonic_interpolates_and_clamps():
    cal = IsotonicCalibrator(x=[0.0, 1.0, 2.0], y=[0.1, 0.5, 0.7])
    out = cal.transform(np.array([-1.0, 0.5, 1.5, 9.0]))
    assert out == pytest.approx([0.1, 0.3, 0.6, 0.7])


def test_isotonic_pools_ties_and_violators():
    cal = IsotonicCalibrator.fit(np.array([0.0, 1.0, 1.0, 2.0, 3.0]), np.array([0, 1, 0, 0, 1]))
    # x=1 ties average to 0.5, then x=2 (0.0) violates and pools with it to 1/3
    assert cal.transform(np.array([1.0, 2.0]), None) == pytest.approx([1 / 3, 1 / 3])
    assert cal.transform(np.array([3.0]))[0] == pytest.approx(1 - 1e-4)


def test_fit_rejects_bad_arrays():
    with pytest.raises(InvalidRequestError):
        PlattCalibrator.fit(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(InvalidRequestError):
        PlattCalibrator.fit(np.array([1.0, 2.0]), np.array([1.0, 0.5]))
    with pytest.raises(InvalidRequestError):
        IsotonicCalibrator.fit(np.array([1.0, np.nan]), np.array([1.0, 0.0]))
    with pytest.raises(UnknownNameError) as exc:
        fit_calibrator("nope", [], [])
    assert "platt" in str(exc.value)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"a": 1}',
        '{"type": ["platt"]}',
        '{"type": "platt", "a": "abc"}',
        '{"type": "platt", "a": 1, "b": 0, "source": "nope"}',
        '{"type": "temperature", "temperature": -1}',
        '{"type": "temperature", "temperature": 1, "mode": "nope"}',
        '{"type": "isotonic", "x": [0, 1], "y": [0.5, 0.2]}',
        '{"type": "isotonic", "x": [1, 0], "y": [0.2, 0.5]}',
        '{"type": "isotonic", "x": [0], "y": [2.0]}',
        '{"type": "isotonic", "x": [], "y": []}',
        '{"type": "logistic", "features": []}',
        '{"type": "logistic", "features": [{"name": "s", "dim": 2, "theta": [1.0]}]}',
        '{"type": "logistic", "features": [{"name": "s", "theta": [1.0], "scale": [0.0]}]}',
    ],
)
def test_load_calibrator_rejects_bad_files(tmp_path, content):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(ClientError) as exc:
        load_calibrator(path)
    assert exc.value.param == "calibrator"


def test_load_calibrator_unknown_type_lists_valid_names(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text('{"type": "magic"}')
    with pytest.raises(UnknownNameError) as exc:
        load_calibrator(path)
    for name in ("identity", "isotonic", "logistic", "platt", "temperature"):
        assert name in str(exc.value)


def test_load_calibrator_missing_file_and_directory(tmp_path):
    with pytest.raises(InvalidRequestError, match="does not exist"):
        load_calibrator(tmp_path / "none.json")
    with pytest.raises(InvalidRequestError):
        load_calibrator(tmp_path)


# ---- conformance: each calibrator through the shared mixins (llm_recommender.testing) --------



class TestIdentityConformance(CalibratorTests):
    component = IdentityCalibrator


class TestPlattConformance(CalibratorTests):
    component = PlattCalibrator
    config = {"a": 2.0, "b": -1.0}


class TestTemperatureSoftmaxConformance(CalibratorTests):
    component = TemperatureCalibrator
    config = {"temperature": 2.0, "mode": "softmax"}


class TestTemperatureSigmoidConformance(CalibratorTests):
    component = TemperatureCalibrator
    config = {"temperature": 0.5, "mode": "sigmoid"}
    fit_options = {"mode": "sigmoid"}


class TestIsotonicConformance(CalibratorTests):
    component = IsotonicCalibrator
    config = {"x": [-3.0, -1.0, 0.0], "y": [0.05, 0.3, 0.6]}


def test_positional_construction_still_works():
    assert PlattCalibrator(2.0, -1.0).config == PlattCalibrator(a=2.0, b=-1.0).config
    assert IsotonicCalibrator([0.0, 1.0], [0.1, 0.5]).params()["y"] == [0.1, 0.5]
