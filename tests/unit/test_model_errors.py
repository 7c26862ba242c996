"""A model that cannot be loaded says why at once, in one line: a folder that does not exist, or a hub id
while the Hugging Face Hub is unreachable (pointed at a closed port on 127.0.0.1, so the test holds on a
machine with network too)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_recommender.errors import ModelLoadError
from llm_recommender.model_store import resolve_model

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return endpoint


@pytest.mark.parametrize("name", ["/no/such/folder", "./no/such", "~/no-such-model-here", "models/a/b"])
def test_a_path_that_does_not_exist_says_so(name, no_hub):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        resolve_model(name)
    assert err.value.message.startswith(f"model folder {name} does not exist")
    assert err.value.param == "model" and time.monotonic() - start < 1


def test_a_hub_id_with_the_hub_unreachable_fails_in_seconds_with_one_line(no_hub):
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        resolve_model("someorg/somemodel")
    assert time.monotonic() - start < 10
    msg = err.value.message
    assert f"the Hugging Face Hub ({no_hub}) is unreachable" in msg and "'someorg/somemodel'" in msg
    assert "--model /path/to/folder" in msg and "\n" not in msg


def test_offline_mode_fails_without_a_probe(no_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("llm_recommender.model_store.hub_reachable", lambda *a, **k: pytest.fail("probed the hub"))
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
        resolve_model("someorg/somemodel")


def test_a_cached_hub_model_loads_from_the_cache_while_the_hub_is_unreachable(no_hub, tmp_path):
    snapshot = tmp_path / "hub" / "models--someorg--somemodel" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    assert resolve_model("someorg/somemodel") == str(snapshot)


def test_the_cli_says_it_in_one_line(tmp_path):
    (tmp_path / "req.json").write_text(json.dumps({"history": [{"id": "1", "title": "Alien"}],
                                                   "candidates": [{"id": "2", "title": "Aliens"}]}))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
           "HF_HUB_CACHE": str(tmp_path / "hub"), "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    for model, expected in [("/no/such/folder", "error: model folder /no/such/folder does not exist"),
                            ("someorg/somemodel", "error: the Hugging Face Hub (http://127.0.0.1:")]:
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "llm_recommender.cli", "rank", str(tmp_path / "req.json"),
                               "--model", model, "--backend", "transformers"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected), proc.stderr[-2000:]
        assert elapsed < 30, f"{model}: {elapsed:.1f} s (imports included; it took 56 s of retries before)"
