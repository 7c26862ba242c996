"""``llm-rec batch``: per-row errors, catalogue candidates, Parquet, resume (in-process and after killing
a Ray job), and the Ray job itself on a local 2-CPU Ray with the fake backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from llm_recommender.batch import BatchConfig, RecommenderSpec, read_output, run_batch
from tests.batch_helpers import fake, user_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **kw) -> BatchConfig:
    return BatchConfig(**{"input": tmp_path / "users.jsonl", "output": tmp_path / "out", "batch_size": 4,
                          "use_ray": False, "progress": False, **kw})


def by_row(rows: list[dict]) -> dict[int, dict]:
    assert len(rows) == len({r["row"] for r in rows}), Counter(r["row"] for r in rows).most_common(3)
    return {r["row"]: r for r in rows}


def test_bad_rows_become_errors_naming_the_field(tmp_path):
    good = user_rows(3)
    bad_title = {**good[0], "user_id": "bad-title", "history": [{"id": "x", "title": ""}]}
    rows = [good[0], {"history": []}, bad_title, {**good[1], "user_id": "u0"}, {"user_id": "nocands"},
            {**good[2], "colour": "red"}, {**good[1], "user_id": "badk", "top_k": 0}, good[1]]
    write_jsonl(tmp_path / "users.jsonl", rows, raw_lines=('{"user_id": "broken", "history": [',))
    summary = run_batch(config(tmp_path), RecommenderSpec(factory=fake))
    out = by_row(read_output(tmp_path / "out"))
    assert len(out) == 9 and summary.rows == 9 and summary.ranked == 2 and summary.errors == 7
    assert out[0]["error"] is None and [it["rank"] for it in out[0]["items"]] == [1, 2, 3, 4]
    assert 0 <= out[0]["items"][0]["probability"] <= 1
    params = {i: out[i]["error"]["param"] for i in out if out[i]["error"]}
    assert params == {1: "user_id", 2: "history[0].title", 3: "user_id", 4: "candidates", 5: "colour", 6: "top_k", 8: "row"}
    assert "duplicate user_id 'u0' (first at row 0)" in out[3]["error"]["message"]
    assert "line 9" in out[8]["error"]["message"]
    assert out[7]["user_id"] == "u1" and out[7]["error"] is None


def test_rows_without_candidates_rank_the_catalogue_minus_their_history(tmp_path):
    catalog = [{"id": str(k), "title": f"Catalogue movie {k}"} for k in range(6)]
    write_jsonl(tmp_path / "catalog.jsonl", catalog)
    write_jsonl(tmp_path / "users.jsonl", [{"user_id": 7, "history": [{"id": 2, "title": "Catalogue movie 2"}], "top_k": 10}])
    run_batch(config(tmp_path, catalog=tmp_path / "catalog.jsonl"), RecommenderSpec(factory=fake))
    [row] = read_output(tmp_path / "out")
    assert row["user_id"] == "7" and row["error"] is None
    assert sorted(it["id"] for it in row["items"]) == ["0", "1", "3", "4", "5"]


def test_parquet_in_and_out_match_jsonl(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    rows = user_rows(5)
    rows[1]["history"][0]["attributes"] = {"genres": ["Drama"]}  # absent elsewhere: nulls in Parquet
    write_jsonl(tmp_path / "users.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "users.parquet")
    run_batch(config(tmp_path), RecommenderSpec(factory=fake))
    run_batch(config(tmp_path, input=tmp_path / "users.parquet", output=tmp_path / "outpq", output_format="parquet"),
              RecommenderSpec(factory=fake))
    assert list((tmp_path / "outpq").glob("part-*.parquet"))
    a, b = by_row(read_output(tmp_path / "out")), by_row(read_output(tmp_path / "outpq"))
    assert a == b and all(r["error"] is None for r in a.values())


def test_rerun_skips_users_already_written(tmp_path):
    write_jsonl(tmp_path / "users.jsonl", user_rows(10) + [{"history": []}])
    first = run_batch(config(tmp_path, limit=6), RecommenderSpec(factory=fake))
    assert (first.rows, first.skipped, first.ranked) == (6, 0, 6)
    second = run_batch(config(tmp_path), RecommenderSpec(factory=fake))
    assert (second.rows, second.skipped, second.ranked, second.errors) == (11, 6, 4, 1)
    third = run_batch(config(tmp_path), RecommenderSpec(factory=fake))
    assert (third.skipped, third.ranked, third.errors) == (11, 0, 0)
    out = by_row(read_output(tmp_path / "out"))
    assert sorted(out) == list(range(11))


def test_resuming_with_another_format_is_refused(tmp_path):
    from llm_recommender.errors import InvalidRequestError

    write_jsonl(tmp_path / "users.jsonl", user_rows(2))
    run_batch(config(tmp_path), RecommenderSpec(factory=fake))
    with pytest.raises(InvalidRequestError) as info:
        run_batch(config(tmp_path, output_format="parquet"), RecommenderSpec(factory=fake))
    assert info.value.param == "output_format"


# ---- on Ray ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_ray_job_completes_and_matches_the_loop(tmp_path, local_ray):
    write_jsonl(tmp_path / "users.jsonl", user_rows(40) + [{"user_id": "bad", "history": "not a list"}])
    ray_cfg = config(tmp_path, use_ray=True, num_workers=2, cpus_per_worker=0.5)
    summary = run_batch(ray_cfg, RecommenderSpec(factory=fake))
    assert (summary.ranked, summary.errors, summary.executor) == (40, 1, "ray x2")
    run_batch(config(tmp_path, output=tmp_path / "loop"), RecommenderSpec(factory=fake))
    ray_rows, loop_rows = by_row(read_output(tmp_path / "out")), by_row(read_output(tmp_path / "loop"))
    assert ray_rows == loop_rows
    assert ray_rows[40]["error"]["param"] == "history"


def test_ray_job_killed_halfway_resumes_without_loss_or_duplicates(tmp_path, local_ray):
    n = 48
    write_jsonl(tmp_path / "users.jsonl", user_rows(n))
    out = tmp_path / "out"
    script = (
        "import sys; from pathlib import Path; from functools import partial\n"
        "from llm_recommender.batch import BatchConfig, RecommenderSpec, run_batch\n"
        "from tests.batch_helpers import slow_fake\n"
        f"cfg = BatchConfig(input=Path({str(tmp_path / 'users.jsonl')!r}), output=Path({str(out)!r}), batch_size=4,"
        " num_workers=2, cpus_per_worker=0.5, progress=False)\n"
        "run_batch(cfg, RecommenderSpec(factory=partial(slow_fake, 0.4)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Its own session, so killing the group takes the job's local Ray down with its driver.
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("part-*"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the job wrote no parts"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    time.sleep(2)  # any worker of the killed job still finishing a part would show up here
    written = read_output(out)
    assert 0 < len(written) < n, "the kill did not land halfway"
    summary = run_batch(config(tmp_path, use_ray=True, num_workers=2, cpus_per_worker=0.5), RecommenderSpec(factory=fake))
    rows = read_output(out)
    assert summary.skipped == len(written) and summary.ranked == n - len(written)
    assert sorted(r["user_id"] for r in rows) == sorted(f"u{u}" for u in range(n))  # none lost, none twice
    assert all(r["error"] is None for r in rows)


def test_cli_batch_no_ray(tmp_path):
    write_jsonl(tmp_path / "users.jsonl", user_rows(5) + [{"user_id": "x", "history": [], "candidates": []}])
    proc = subprocess.run([sys.executable, "-m", "llm_recommender.cli", "batch", str(tmp_path / "users.jsonl"),
                           str(tmp_path / "out"), "--no-ray", "--backend", "fake", "--batch-size", "2"],
                          capture_output=True, timeout=120, cwd=REPO, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    summary = json.loads(proc.stdout)
    assert (summary["ranked"], summary["errors"]) == (5, 1)
    assert "users/s" in err and "batch: 6/6 users (1 errors)" in err
    assert {r["user_id"]: (r["error"] or {}).get("param") for r in read_output(tmp_path / "out")}["x"] == "candidates"


def test_a_bundle_spec_keeps_the_options(monkeypatch, tmp_path):
    """--bundle with --backend/--threads: the options reach Recommender.load (they were dropped before)."""
    from llm_recommender.batch import job

    seen = {}
    monkeypatch.setattr(job.Recommender, "load", classmethod(lambda cls, bundle, **kw: seen.update(bundle=bundle, **kw)))
    RecommenderSpec(bundle=tmp_path, kwargs={"backend": "vllm", "threads": 4}).build()
    assert seen == {"bundle": tmp_path, "backend": "vllm", "threads": 4}
