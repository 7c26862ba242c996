"""``llm-rec batch`` on a local 2-CPU Ray with the real default model: a few sample users, each ranked
exactly as the in-process Recommender ranks them."""

from __future__ import annotations

import json

import pytest

from llm_recommender import Recommender
from llm_recommender.batch import BatchConfig, RecommenderSpec, read_output, run_batch
from llm_recommender.sample_data import sample_request
from tests.conftest import skip_or_fail

pytestmark = pytest.mark.integration


def test_ray_job_with_the_default_model(tmp_path, default_model_dir):
    try:
        import ray
    except ModuleNotFoundError:
        skip_or_fail("ray is not installed (pip install -e '.[batch]')")
    users = ["1", "2", "3", "4"]
    requests = {u: sample_request(u, n_candidates=8, history_len=10, reasons=False, top_k=8)[0] for u in users}
    with (tmp_path / "users.jsonl").open("w") as fh:
        for u in users:
            fh.write(json.dumps({"user_id": u, "history": requests[u]["history"], "candidates": requests[u]["candidates"]}) + "\n")
        fh.write(json.dumps({"user_id": "5", "history": [], "candidates": [{"id": "1"}]}) + "\n")  # no title
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        summary = run_batch(BatchConfig(input=tmp_path / "users.jsonl", output=tmp_path / "out", top_k=8, batch_size=2,
                                        num_workers=2, cpus_per_worker=1, progress=False),
                            RecommenderSpec(kwargs={"backend": "transformers"}))
    finally:
        ray.shutdown()
    assert (summary.ranked, summary.errors) == (4, 1)
    rows = {r["user_id"]: r for r in read_output(tmp_path / "out")}
    assert rows["5"]["error"]["param"] == "candidates[0].title"
    rec = Recommender(backend="transformers", threads=1)  # the workers' thread count (1 CPU each)
    for u, response in zip(users, rec.rank_many([requests[u] for u in users])):
        got = rows[u]["items"]
        assert [it["id"] for it in got] == [it.id for it in response.items], u
        assert [it["probability"] for it in got] == pytest.approx([it.probability for it in response.items], abs=1e-4)
