"""`llm-rec tune generative` on a tiny random model: steps run, save, resume, and the output loads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

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
    assert r.exit_code == 0 and "head" in r.output and "generative" in r.output


def test_cli_tune_head_then_rank_with_it(tiny_model_dir, tmp_path, monkeypatch, sample_request):
    from typer.testing import CliRunner

    from llm_recommender.cli import app

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    data = write_tiny_dataset(tmp_path / "data")
    head = tmp_path / "head"
    r = CliRunner().invoke(
        app,
        [
            "tune",
            "head",
            "--out",
            str(head),
            "--dataset",
            "generic",
            "--data-dir",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--epochs",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (head / "head.json").is_file() and (head / "head.safetensors").is_file()
    assert list((tmp_path / "cache" / "representations").glob("*/vectors.npz"))
    req = tmp_path / "req.json"
    req.write_text(json.dumps(sample_request))
    monkeypatch.setenv("LLM_REC_REPRESENTATION_HEAD", str(head))
    r = CliRunner().invoke(app, ["rank", str(req), "--model", str(tiny_model_dir), "--strategy", "representation"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["strategy"] == "representation"
