"""The feature model P(u, i) = sigmoid(theta^T x + b): fitting, JSON, missing features,
the Recommender seam, and the hybrid scorer built on it."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend
from llm_recommender.calibration import (
    FeatureLogisticCalibrator,
    FeatureSet,
    PlattCalibrator,
    fit_calibrator,
    load_calibrator,
)
from llm_recommender.errors import InvalidRequestError
from llm_recommender.testing import CalibratorTests


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def ece(p, y, bins: int = 15) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(
        sum((idx == b).mean() * abs(p[idx == b].mean() - y[idx == b].mean()) for b in range(bins) if (idx == b).any())
    )


def log_loss(p, y) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def sample(seed: int, n: int = 4000):
    """Truth depends on an LLM-like score, a popularity-like feature and a 4-d vector;
    the 'LLM' alone reports an overconfident probability from its score."""
    rng = np.random.default_rng(seed)
    llm, pop, vec = rng.normal(size=n), rng.normal(size=n), rng.normal(size=(n, 4))
    z = 1.0 * llm + 0.8 * pop + vec @ np.array([0.5, 0.0, -0.5, 0.0]) - 1.0
    y = (rng.random(n) < sigmoid(z)).astype(float)
    fs = FeatureSet({"llm": llm, "popularity": pop, "h": vec})
    return fs, sigmoid(3 * llm), y


def test_feature_model_fits_and_beats_the_raw_llm_probability():
    fs, raw, y = sample(0)
    cal = FeatureLogisticCalibrator.fit(fs, y)
    coef = cal.coefficients()
    assert coef["llm"][0] > 0.5 and coef["popularity"][0] > 0.4
    assert coef["h"][0] > 0.2 and coef["h"][2] < -0.2 and abs(coef["h"][1]) < 0.15
    fs2, raw2, y2 = sample(1)
    p = cal.transform_features(fs2)
    assert ece(p, y2) < 0.03 < ece(raw2, y2)
    assert log_loss(p, y2) < log_loss(raw2, y2)


def test_feature_model_json_round_trip_is_exact(tmp_path):
    fs, _, y = sample(0, n=500)
    cal = FeatureLogisticCalibrator.fit(fs, y, l2=0.5)
    cal.save(tmp_path / "cal.json")
    loaded = load_calibrator(tmp_path / "cal.json")
    assert isinstance(loaded, FeatureLogisticCalibrator)
    assert loaded.names == ["llm", "popularity", "h"] and loaded.dims == [1, 1, 4] and loaded.l2 == 0.5
    assert np.array_equal(loaded.transform_features(fs), cal.transform_features(fs))


def test_missing_or_misshapen_feature_is_named():
    fs, _, y = sample(0, n=200)
    cal = FeatureLogisticCalibrator.fit(fs, y)
    partial = FeatureSet({"llm": fs.column("llm"), "h": fs.column("h")})
    with pytest.raises(InvalidRequestError) as exc:
        cal.transform_features(partial)
    assert exc.value.param == "features.popularity" and "'popularity'" in exc.value.message
    wrong = FeatureSet({"llm": fs.column("llm"), "popularity": fs.column("popularity"), "h": fs.column("h")[:, :2]})
    with pytest.raises(InvalidRequestError) as exc:
        cal.transform_features(wrong)
    assert exc.value.param == "features.h"
    with pytest.raises(InvalidRequestError) as exc:  # through the single-score seam only score/probability exist
        cal.transform(np.zeros(3), np.zeros(3))
    assert exc.value.param == "features.llm"


def test_feature_set_checks_rows_and_joins():
    with pytest.raises(InvalidRequestError):
        FeatureSet({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(InvalidRequestError):
        FeatureSet({"a": [1.0, float("nan")]})
    joined = FeatureSet.concat(
        [FeatureSet({"a": [1.0], "v": [[1.0, 2.0]]}), FeatureSet({"a": [3.0], "v": [[3.0, 4.0]]})]
    )
    assert joined.n_rows == 2 and joined.column("v").shape == (2, 2)
    with pytest.raises(InvalidRequestError):
        FeatureSet.concat([FeatureSet({"a": [1.0]}), FeatureSet({"b": [1.0]})])


# ---- through the Recommender (fake backend: the only fake) ---------------------------


def candidates_request(titles: list[str]) -> dict:
    return {
        "history": [{"id": "h1", "title": "Toy Story (1995)"}],
        "candidates": [{"id": str(i), "title": t} for i, t in enumerate(titles)],
        "top_k": len(titles),
        "strategy": "pointwise",
    }


def yes_if_liked(liked: dict[str, float]):
    """Fake model: P(Yes) logit is `liked[title]` for the candidate in the prompt."""

    def score_fn(prompt: str, token: str) -> float:
        tail = prompt.rsplit("Toy Story (1995)", 1)[-1]
        for title, logit in liked.items():
            if title in tail:
                return logit if token == "Yes" else 0.0
        return 0.0

    return score_fn


def test_recommender_applies_a_platt_calibrator_fitted_on_validation_outputs(tmp_path):
    titles = ["Heat (1995)", "Casino (1995)", "Babe (1995)", "Sabrina (1995)"]
    backend = FakeBackend(score_fn=yes_if_liked({"Heat": 4.0, "Casino": 1.0, "Babe": -1.0, "Sabrina": -3.0}))
    rec = Recommender(backend=backend, strategy="pointwise")
    from llm_recommender.protocol import parse_request

    req = parse_request(candidates_request(titles))
    val_results = rec.scorer("pointwise").score_many([req] * 3)
    val_labels = [np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0]), np.array([0, 1, 0, 0])]
    cal = fit_calibrator("platt", val_results, val_labels)
    assert isinstance(cal, PlattCalibrator)
    cal.save(tmp_path / "platt.json")

    calibrated = Recommender(backend=backend, strategy="pointwise", calibrator=tmp_path / "platt.json")
    resp = calibrated.rank_request(candidates_request(titles))
    assert resp.calibrator == "platt"
    for item in resp.items:
        assert item.probability == pytest.approx(float(sigmoid(cal.a * item.score + cal.b)))
    # calibration changes probabilities, never the ranking
    assert [i.id for i in resp.items] == [i.id for i in rec.rank_request(candidates_request(titles)).items]


def test_recommender_accepts_a_feature_model_on_score_and_probability(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(size=300)
    y = (rng.random(300) < sigmoid(0.5 * s)).astype(float)
    FeatureLogisticCalibrator.fit(FeatureSet({"score": s}), y).save(tmp_path / "f.json")
    backend = FakeBackend(score_fn=yes_if_liked({"Heat": 2.0}))
    resp = Recommender(backend=backend, strategy="pointwise", calibrator=tmp_path / "f.json").rank_request(
        candidates_request(["Heat (1995)", "Babe (1995)"])
    )
    assert resp.calibrator == "logistic" and resp.items[0].id == "0"
    assert 0.5 < resp.items[0].probability < 1.0


# ---- the hybrid scorer ------------------------------------------------------------------



# ---- conformance (llm_recommender.testing) ---------------------------------------------------



class TestFeatureLogisticConformance(CalibratorTests):
    component = FeatureLogisticCalibrator
    config = {"features": [{"name": "score", "theta": [1.5]}, {"name": "probability", "theta": [0.5]}], "bias": -1.0}
