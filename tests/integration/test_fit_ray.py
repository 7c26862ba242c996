"""``llm-rec fit --ray-address``: the item-representation step on a real local 2-CPU Ray cluster with a tiny random
model gives the single-process fit's vectors, and a bundle that loads and ranks the same; a worker killed mid-batch
and an interrupted fit both end with the same vectors, the interrupted one without recomputing what it received."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import skip_or_fail

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_representation import write_tiny_dataset

pytestmark = pytest.mark.integration

COMPONENTS = ["popularity", "representation"]


@pytest.fixture(scope="module")
def ray_module():
    try:
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError:
        skip_or_fail("ray is not installed (pip install -e '.[batch]')")
    return ray


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("fit-ray-data"), n_items=70)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty representation cache, so the step computes every vector (it is shared by both paths otherwise)."""
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fit(data_dir, model_dir, out, **over):
    from llm_recommender.bundle import FitConfig, fit_bundle

    lines: list[str] = []
    cfg = FitConfig(dataset="generic", data_dir=data_dir, model=str(model_dir), components=COMPONENTS, valid_users=20,
                    min_gain=-1.0, threads=1, progress=False, **over)
    return fit_bundle(cfg, out, log=lines.append), lines


def _single_process_vectors(data_dir, model_dir):
    from llm_recommender.backends.configs import TransformersConfig
    from llm_recommender.backends.transformers_backend import TransformersBackend
    from llm_recommender.data import load_dataset
    from llm_recommender.prompts import PromptRenderer
    from llm_recommender.scorers.learned.encoder import ItemEncoder

    ds = load_dataset("generic", data_dir)
    items = [ds.item(i) for i in ds.item_ids]
    backend = TransformersBackend(TransformersConfig(model=str(model_dir), threads=1))
    enc = ItemEncoder.from_backend(backend, PromptRenderer(backend), batch_size=32, cache=False)
    return items, enc.encode_items(items)


def test_ray_fit_gives_the_single_process_vectors_and_bundle(ray_module, tiny_model_dir, data_dir, tmp_path,
                                                             monkeypatch):
    from llm_recommender import Recommender
    from llm_recommender.bundle import read_manifest
    from llm_recommender.scorers.item_space import ItemSpace

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache-one"))
    one, _ = _fit(data_dir, tiny_model_dir, tmp_path / "one")
    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache-ray"))
    assert not ray_module.is_initialized()
    on_ray, lines = _fit(data_dir, tiny_model_dir, tmp_path / "ray", ray_address="local", ray_workers=2)
    assert not ray_module.is_initialized()  # the fit's own local cluster stopped with the step
    assert "fit: item vectors on Ray: 70 computed, 0 from an interrupted run, 0 from the representation cache" in lines
    assert not list((tmp_path / "cache-ray" / "representations").glob("*/ray-parts"))  # parts dropped once cached

    a, b = ItemSpace.load(one).vectors["llm"], ItemSpace.load(on_ray).vectors["llm"]
    assert a.shape == b.shape == (70, 64)
    np.testing.assert_allclose(b, a, atol=1e-5)
    ma, mb = read_manifest(one), read_manifest(on_ray)
    assert (mb.model_fingerprint, mb.representation, mb.templates) == (ma.model_fingerprint, ma.representation,
                                                                      ma.templates)
    assert mb.fit["config"]["ray_address"] == "local"
    # the bar: validation NDCG@10 within 0.01 of the single-process fit (here the vectors are the same)
    for key in ("fused_ndcg@10_in_sample", "fused_ndcg@10_cv"):
        assert abs(mb.validation[key] - ma.validation[key]) <= 0.01

    def item(i):
        return {"id": str(i), "title": f"Space adventure {i}" if i % 2 else f"Love story {i}"}

    request = {"history": [item(i) for i in (1, 3, 5)], "candidates": [item(i) for i in range(10, 30)], "top_k": 20}
    ra = Recommender.load(one, model=str(tiny_model_dir), threads=1).rank(**request)
    rb = Recommender.load(on_ray, model=str(tiny_model_dir), threads=1).rank(**request)
    assert [it.id for it in rb.items] == [it.id for it in ra.items]
    assert [it.score for it in rb.items] == pytest.approx([it.score for it in ra.items], abs=1e-6)


@pytest.fixture(scope="module")
def local_ray(ray_module):
    ray_module.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray_module
    ray_module.shutdown()


def test_a_worker_killed_mid_batch_is_replaced_and_its_batch_retried(local_ray, tiny_model_dir, data_dir, tmp_path,
                                                                     fresh_cache):
    from llm_recommender.bundle.fit_ray import ray_item_vectors

    items, expected = _single_process_vectors(data_dir, tiny_model_dir)
    marker = tmp_path / "killed"

    def kill_once(texts):  # the first batch any worker takes ends its process, as a lost node would
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)

    vectors, _, remote = ray_item_vectors(local_ray, str(tiny_model_dir), items, workers=2, on_batch=kill_once)
    assert marker.is_file()  # a worker did die
    assert remote.computed == 70 and remote.resumed == 0
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_an_interrupted_run_resumes_from_the_batches_it_received(local_ray, tiny_model_dir, data_dir, tmp_path,
                                                                  fresh_cache):
    from llm_recommender.bundle.fit_ray import ray_item_vectors

    items, expected = _single_process_vectors(data_dir, tiny_model_dir)
    last = str(items[-1].title)  # in the third and last batch (rows 64-69)
    parts_glob = "representations/*/ray-parts/*.npz"

    def fail_last(texts):
        if any(last in t for t in texts):
            deadline = time.monotonic() + 60
            while not list(fresh_cache.glob(parts_glob)) and time.monotonic() < deadline:
                time.sleep(0.05)  # the driver has written what it received: the run dies after some progress
            raise ValueError("the fit was interrupted")

    with pytest.raises(Exception, match="the fit was interrupted"):
        ray_item_vectors(local_ray, str(tiny_model_dir), items, workers=2, on_batch=fail_last)
    parts = list(fresh_cache.glob(parts_glob))
    kept = sum(len(np.load(p)["keys"]) for p in parts)
    assert 32 <= kept < 70  # the first batch or two arrived before the last one failed

    vectors, _, remote = ray_item_vectors(local_ray, str(tiny_model_dir), items, workers=2)
    assert remote.resumed == kept and remote.computed == 70 - kept
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert not list(fresh_cache.glob("representations/*/ray-parts"))


def test_cli_ray_options_reach_the_fit_which_says_when_nothing_runs_on_ray(data_dir, tmp_path, fresh_cache):
    from typer.testing import CliRunner

    from llm_recommender.bundle import read_manifest
    from llm_recommender.cli import app

    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["fit", "-o", str(out), "--dataset", "generic", "--data-dir", str(data_dir),
                                      "--components", "popularity", "--valid-users", "20", "--ray-address", "local",
                                      "--ray-workers", "3", "--ray-cpus-per-worker", "2"])
    assert result.exit_code == 0, result.output
    assert "no component needs LLM item vectors" in result.output
    config = read_manifest(out).fit["config"]
    assert (config["ray_address"], config["ray_workers"], config["ray_cpus_per_worker"]) == ("local", 3, 2.0)
