"""A calibrator applies to the strategy, model and prompts it was fitted for, and to no other."""

from __future__ import annotations

import json

import pytest

from llm_recommender import InvalidRequestError, PlattCalibrator, Recommender
from llm_recommender.backends.fake import FakeBackend

REQ = {"candidates": [{"id": "a", "title": "Heat (1995)"}, {"id": "b", "title": "Babe (1995)"}]}


def fitted(rec: Recommender, for_strategy: str, path, **override) -> PlattCalibrator:
    cal = PlattCalibrator(a=2.0, b=-1.0)
    cal.fitted_for = {**rec.calibration_key(for_strategy), **override}
    cal.save(path)
    return cal


def test_saved_file_records_strategy_model_and_template_hash(tmp_path):
    rec = Recommender(backend=FakeBackend())
    fitted(rec, "pointwise", tmp_path / "p.json")
    meta = json.loads((tmp_path / "p.json").read_text())["fitted_for"]
    assert meta["strategy"] == "pointwise" and meta["model"] == "fake-model" and len(meta["template_hash"]) >= 12


def test_a_calibrator_is_applied_only_to_its_strategy(tmp_path):
    backend = FakeBackend()
    rec = Recommender(backend=backend, strategy="pointwise")
    fitted(rec, "pointwise", tmp_path / "p.json")
    rec = Recommender(backend=backend, strategy="pointwise", calibrator=tmp_path / "p.json")
    assert rec.rank_request(REQ).calibrator == "platt"
    other = rec.rank_request({**REQ, "strategy": "verbalizer"})  # not fitted on verbalizer scores
    assert other.calibrator == "identity"


def test_one_calibrator_per_strategy(tmp_path):
    backend = FakeBackend()
    rec = Recommender(backend=backend)
    fitted(rec, "pointwise", tmp_path / "p.json")
    fitted(rec, "verbalizer", tmp_path / "v.json")
    rec = Recommender(backend=backend, calibrators={"pointwise": tmp_path / "p.json", "verbalizer": tmp_path / "v.json"})
    assert rec.rank_request(REQ).calibrator == "platt"
    assert rec.rank_request({**REQ, "strategy": "pointwise"}).calibrator == "platt"
    assert rec.rank_request({**REQ, "strategy": "listwise"}).calibrator == "identity"
    via_settings = Recommender(backend=backend, calibrators={"pointwise": str(tmp_path / "p.json")})
    assert via_settings.rank_request({**REQ, "strategy": "pointwise"}).calibrator == "platt"


@pytest.mark.parametrize(
    "field, value, words",
    [("strategy", "verbalizer", "strategy"), ("model", "another-model", "model"), ("template_hash", "0" * 16, "templates")],
)
def test_a_calibrator_for_something_else_is_a_typed_error(tmp_path, field, value, words):
    backend = FakeBackend()
    rec = Recommender(backend=backend)
    fitted(rec, "pointwise", tmp_path / "p.json", **{field: value})
    with pytest.raises(InvalidRequestError) as info:
        Recommender(backend=backend, strategy="pointwise", calibrator=tmp_path / "p.json")
    assert info.value.param == "calibrator" and words in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        Recommender(backend=backend, calibrators={"pointwise": tmp_path / "p.json"})
    assert info.value.param == "calibrators.pointwise"


def test_unknown_strategy_in_calibrators_is_a_typed_error(tmp_path):
    PlattCalibrator(a=1.0, b=0.0).save(tmp_path / "c.json")
    with pytest.raises(Exception) as info:
        Recommender(backend=FakeBackend(), calibrators={"magic": tmp_path / "c.json"})
    assert "valid strategy names" in str(info.value)
