"""``llm-rec fit --ray-address``: the sequence model trains data-parallel on Ray Train (2 workers, 1 CPU each, DDP
over gloo) on a real local Ray cluster. Its bundle loads and ranks, its validation NDCG@10 is close to the
single-process fit's, and a worker that dies after the first epoch's checkpoint makes Ray Train restart the group,
which resumes from that checkpoint instead of epoch 0."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import skip_or_fail

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))
from test_representation import write_tiny_dataset

pytestmark = pytest.mark.integration

EPOCHS = 20
# Small enough to train in a few seconds; ID-only (no item vectors: the fit needs no LLM).
MODEL = {"epochs": EPOCHS, "patience": EPOCHS, "dim": 32, "layers": 1, "heads": 2, "id_dropout": 0.1,
         "batch_size": 16, "lr": 5e-3}
# One process on this data, seeds 0, 1, 2: validation NDCG@10 0.350, 0.395, 0.374 with the sequence model's defaults
# of 2026-12-06 (cosine schedule, bf16 on an AVX512-BF16 CPU); 0.383, 0.400, 0.382 before (untrained: about 0.22).
# The two paths differ in their torch random streams and in how the loss is averaged over a batch, so they may
# differ as much as seeds do: the bar is 0.05, and both must have learned (above 0.3).
TOLERANCE = 0.05
LEARNED = 0.3


@pytest.fixture(scope="module")
def ray_module():
    try:
        import ray
        import ray.train.torch  # noqa: F401
    except ModuleNotFoundError:
        skip_or_fail("ray[train] is not installed (pip install -e '.[batch]')")
    return ray


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("fit-ray-train-data"), n_users=120, n_items=40, per_user=20)


def _fit(data_dir, out, **over):
    from llm_recommender.bundle import FitConfig, fit_bundle

    lines: list[str] = []
    cfg = FitConfig(dataset="generic", data_dir=data_dir, components=["sequence"], valid_users=120, min_gain=-1.0,
                    threads=1, progress=False, component_config={"sequence": {"model": MODEL, "text": "none"}}, **over)
    return fit_bundle(cfg, out, log=lines.append), lines


def test_the_sequence_model_trained_on_ray_train_is_close_to_one_process_and_its_bundle_ranks(
        ray_module, data_dir, tmp_path, monkeypatch):
    from llm_recommender import Recommender
    from llm_recommender.bundle import read_manifest
    from llm_recommender.scorers.learned.sequence_model import SequenceModel

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    one, _ = _fit(data_dir, tmp_path / "one")
    assert not ray_module.is_initialized()
    on_ray, lines = _fit(data_dir, tmp_path / "ray", ray_address="local", ray_workers=2)
    assert not ray_module.is_initialized()  # the fit's own local cluster stopped with the training
    assert "fit: sequence: training on Ray Train, 2 workers on a local cluster of 2 CPUs" in lines
    assert not any((tmp_path / "cache" / "ray-train").glob("sequence-*"))  # the run's folder is gone once done

    ma, mb = read_manifest(one), read_manifest(on_ray)
    (ra,), (rb,) = ma.components, mb.components
    assert ra.ray_train is None
    assert rb.ray_train is not None
    assert (rb.ray_train["workers"], rb.ray_train["epochs"], rb.ray_train["resumed_after_epochs"]) == (2, EPOCHS, [])
    assert rb.ray_train["seconds"] > 0
    model = SequenceModel.load(on_ray / "components" / "sequence" / "model")  # the same files as one process writes
    assert model.record["ray"] == rb.ray_train
    assert [h["epoch"] for h in model.record["history"]] == list(range(1, EPOCHS + 1))
    # the bar, with the tolerance the tiny data supports (see TOLERANCE)
    a, b = ra.validation["ndcg@10"], rb.validation["ndcg@10"]
    assert min(a, b) > LEARNED and abs(b - a) <= TOLERANCE, (a, b)
    assert abs(model.record["best_valid"] - SequenceModel.load(one / "components/sequence/model").record["best_valid"]
               ) <= TOLERANCE

    # users of the tiny data keep to one of two groups (odd: space adventures, even: love stories); a trained model
    # ranks the history's group first
    def item(i):
        return {"id": str(i), "title": f"Space adventure {i}" if i % 2 else f"Love story {i}"}

    rec = Recommender.load(on_ray, threads=1)
    request = {"history": [item(i) for i in (1, 3, 5, 7, 9, 11)], "candidates": [item(i) for i in range(12, 40)],
               "top_k": 10}
    assert len(rec.rank(**request).items) == 10  # the bundle's fusion
    ranked = [it.id for it in rec.rank(**request, strategy="sequence").items]  # the component alone
    assert sum(int(i) % 2 for i in ranked) >= 8, ranked


@pytest.fixture
def local_ray(ray_module):
    """A cluster the test starts itself, stopped after it (the next test may need no cluster running)."""
    ray_module.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray_module
    ray_module.shutdown()


def test_a_worker_that_dies_after_the_first_epoch_resumes_from_its_checkpoint(local_ray, tmp_path):
    from llm_recommender.scorers.component import RayTraining
    from llm_recommender.scorers.learned.sequence_model import SequenceModel, SequenceModelConfig

    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, 30, 12).tolist() for _ in range(50)]
    marker = tmp_path / "died"

    def die_once(epoch, rank):  # rank 1 ends its process after epoch 1's report, as a lost node would
        if epoch != 1 or rank != 1:
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # the restarted worker goes on
        os.close(fd)
        import ray.train

        # wait until Ray Train has registered rank 0's checkpoint of epoch 1, then die
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        os._exit(1)

    cfg = SequenceModelConfig(**{**MODEL, "epochs": 3, "patience": None}, use_text=False)
    settings = RayTraining(address="local", workers=2, storage=tmp_path / "ray-train", on_epoch=die_once)
    model = SequenceModel.fit(sequences, 30, None, cfg, progress=False, ray=settings)

    assert marker.is_file()  # a worker did die
    ray_record = model.record["ray"]
    assert ray_record["resumed_after_epochs"] == [1]  # restarted from epoch 1's checkpoint, not from epoch 0
    assert [h["epoch"] for h in model.record["history"]] == [1, 2, 3]  # each epoch once
    per_epoch = math.ceil(model.record["n_windows"] / cfg.batch_size)
    assert ray_record["steps"] == 3 * per_epoch  # no epoch was trained twice
    scores = model.score([np.array([1, 2, 3])], [np.array([4, 5, 6])])[0]
    assert np.isfinite(scores).all()
    assert not list((tmp_path / "ray-train").glob("sequence-*"))


def test_a_fit_with_both_ray_steps_starts_one_local_cluster(ray_module, tiny_model_dir, data_dir, tmp_path,
                                                           monkeypatch):
    """The item vectors (Ray Data) and the training (Ray Train) share the fit's cluster: one start, one stop."""
    from llm_recommender.bundle import FitConfig, fit_bundle

    monkeypatch.setenv("LLM_REC_CACHE_DIR", str(tmp_path / "cache"))
    assert not ray_module.is_initialized()  # the fit must start its own
    starts: list[dict] = []
    real_init = ray_module.init

    def counting_init(*args, **kwargs):
        starts.append(kwargs)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray_module, "init", counting_init)
    lines: list[str] = []
    cfg = FitConfig(dataset="generic", data_dir=data_dir, model=str(tiny_model_dir),
                    components=["representation", "sequence"], valid_users=60, min_gain=-1.0, threads=1,
                    progress=False, ray_address="local", ray_workers=2,
                    component_config={"sequence": {"model": {**MODEL, "epochs": 2}, "text": "none"}})
    fit_bundle(cfg, tmp_path / "both", log=lines.append)
    assert any(line.startswith("fit: LLM item vectors on Ray Data, 2 workers") for line in lines), lines
    assert "fit: sequence: training on Ray Train, 2 workers on a local cluster of 2 CPUs" in lines
    assert len(starts) == 1, starts
    assert starts[0]["num_cpus"] == 2
    assert not ray_module.is_initialized()
