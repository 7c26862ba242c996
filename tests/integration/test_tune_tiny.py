"""`llm-rec tune generative` on a tiny random model: steps run, save, resume, and the output loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from llm_recommender.model_store import DEFAULT_MODEL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_representation import write_tiny_dataset

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("objective,method", [("pointwise", "full"), ("verbalizer", "lora")])
def test_tune_runs_saves_resumes_and_loads(tiny_model_dir, tmp_path, objective, method, sample_request):
    from llm_recommender.recommender import Recommender
    from llm_recommender.tuning import TuneConfig, tune

    data = write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "run"
    base = {
        "out": out,
        "objective": objective,
        "dataset": "generic",
        "data_dir": data,
        "model": str(tiny_model_dir),
        "method": method,
        "steps": 4,
        "batch_size": 2,
        "history": 3,
        "eval_every": 2,
        "eval_users": 4,
        "patience": 10,
        "max_per_user": 3,
        "lr": 1e-3,
        "progress": False,
    }
    logs: list[str] = []
    first = tune(TuneConfig(**base), log=logs.append)
    assert first["steps_done"] == 4 and first["method"] == method
    assert [v["step"] for v in first["validations"]] == [0, 2, 4]
    state = json.loads((out / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4

    logs.clear()
    second = tune(TuneConfig(**(base | {"steps": 6})), log=logs.append)
    assert any("resumed" in m and "step 4" in m for m in logs)
    assert second["steps_done"] == 6
    assert [v["step"] for v in second["validations"]] == [0, 2, 4, 6]
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 2, 4, 6]

    model_dir = out / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "llm_rec_tune.json").is_file()
    assert not list(model_dir.glob("adapter_*"))  # LoRA is merged: a plain transformers folder
    rec = Recommender(model=str(model_dir), strategy=objective)
    resp = rec.rank(history=sample_request["history"], candidates=sample_request["candidates"], top_k=3)
    assert len(resp.items) == 3


def test_cli_tune_head_and_generative_help():
    from typer.testing import CliRunner

    from llm_recommender.cli import app

    r = CliRunner().invoke(app, ["tune", "--help"])
    assert r.exit_code == 0 and "generative" in r.output


def test_fit_with_llm_representations_then_rank_with_the_bundle(tiny_model_dir, tmp_path, monkeypatch, sample_request):
    """fit on a tiny dataset with the tiny random model, load, identical scores; unseen items use the LLM."""
    from typer.testing import CliRunner

    from llm_recommender import Recommender
    from llm_recommender.bundle import Bundle, BundleError
    from llm_recommender.cli import app

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "data")
    bundle = tmp_path / "bundle"
    r = CliRunner().invoke(app, ["fit", "--out", str(bundle), "--dataset", "generic", "--data-dir", str(data),
                                 "--model", str(tiny_model_dir), "--components", "popularity,cooccurrence,representation",
                                 "--min-gain", "-1"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["model_fingerprint"] and manifest["representation"]["layer"] >= 1
    assert "representation_item.j2" in manifest["templates"]
    sample_request = {**sample_request, "candidates": [{**c, "id": f"new-{c['id']}"} for c in sample_request["candidates"]]}
    req = tmp_path / "req.json"
    req.write_text(json.dumps(sample_request))  # candidates unseen by the bundle: represented by the LLM from their text
    r = CliRunner().invoke(app, ["rank", str(req), "--bundle", str(bundle), "--strategy", "representation"])
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["strategy"] == "representation" and first["backend"] == "transformers"
    again = Recommender.load(bundle, strategy="representation").rank_request(sample_request)
    assert [i.score for i in again.items] == [i["score"] for i in first["items"]]
    assert Bundle.load(bundle).manifest.model == str(tiny_model_dir)
    # another model than the bundle's cannot represent unseen items the same way: a typed error
    other = Recommender.load(bundle, strategy="representation", model=DEFAULT_MODEL)
    with pytest.raises(BundleError, match="fingerprint"):
        other.rank_request(sample_request)
