"""After ``kill -9`` of a batch driver, its local Ray goes away (Ray's DashboardAgent and RuntimeEnvAgent
used to stay, ignoring SIGTERM); ``llm-rec batch --cleanup`` ends what a driver whose watchdog died left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batch_helpers import user_rows, write_jsonl

psutil = pytest.importorskip("psutil")
REPO = Path(__file__).resolve().parents[2]


def alive(recorded: dict[int, tuple[float, str]]) -> dict[int, str]:
    out = {}
    for pid, (created, name) in recorded.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.02 and proc.status() != psutil.STATUS_ZOMBIE:
                out[pid] = name
        except psutil.Error:
            pass
    return out


def test_a_killed_driver_leaves_no_ray_process(tmp_path):
    pytest.importorskip("ray")
    write_jsonl(tmp_path / "users.jsonl", user_rows(40))
    out = tmp_path / "out"
    script = (
        "from pathlib import Path; from functools import partial\n"
        "from llm_recommender.batch import BatchConfig, RecommenderSpec, run_batch\n"
        "from tests.batch_helpers import slow_fake\n"
        f"cfg = BatchConfig(input=Path({str(tmp_path / 'users.jsonl')!r}), output=Path({str(out)!r}), batch_size=4,"
        " num_workers=2, cpus_per_worker=0.5, progress=False)\n"
        "run_batch(cfg, RecommenderSpec(factory=partial(slow_fake, 0.5)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLM_REC_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("part-*")):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]  # pyright: ignore[reportOptionalMemberAccess]
            assert time.monotonic() < deadline, "the job wrote no parts"
            time.sleep(0.1)
        # The driver's cluster, as the process tree shows it (not as the code under test records it).
        cluster = {}
        for p in psutil.Process(proc.pid).children(recursive=True):
            try:
                name = " ".join(p.cmdline())[:80]
                if "ray_cleanup.py" not in name:  # the watchdog itself
                    cluster[p.pid] = (p.create_time(), name)
            except psutil.Error:
                pass
        names = " | ".join(n for _, n in cluster.values())
        assert "raylet" in names and "ray::DashboardAgent" in names and "ray::RuntimeEnvAgent" in names, names
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 PID` does
        proc.wait(30)
    deadline = time.monotonic() + 20
    while alive(cluster) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not alive(cluster), f"left running 20 s after the kill: {alive(cluster)}"


def _ignoring_sigterm(env: dict[str, str]) -> subprocess.Popen[bytes]:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_cleanup_ends_what_a_dead_driver_left_and_nothing_else(tmp_path):
    registry = tmp_path / "cache" / "ray-drivers"
    registry.mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_created = psutil.Process(gone.pid).create_time()
    gone.wait()
    me = psutil.Process()
    orphan, kept = _ignoring_sigterm(dict(os.environ)), _ignoring_sigterm(dict(os.environ))
    try:
        time.sleep(0.2)
        for owner, child in [(f"{gone.pid}:{gone_created:.2f}:a", orphan), (f"{me.pid}:{me.create_time():.2f}:b", kept)]:
            created = psutil.Process(child.pid).create_time()
            (registry / f"{owner.replace(':', '-')}.json").write_text(
                json.dumps({"owner": owner, "processes": {str(child.pid): created}}))
        env = {**os.environ, "PYTHONPATH": str(REPO), "LLM_REC_CACHE_DIR": str(tmp_path / "cache")}
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "llm_recommender.cli", "batch", "--cleanup"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == f"ended 1 Ray process(es) left by killed batch drivers: {orphan.pid}"
        assert orphan.wait(10) == -signal.SIGKILL  # it ignored SIGTERM
        assert kept.poll() is None  # its driver (this test) is alive: its watchdog's business, not ours
        assert [p.name for p in registry.glob("*.json")] == [f"{me.pid}-{me.create_time():.2f}-b.json"]
        assert time.monotonic() - start < 60
    finally:
        for p in (orphan, kept):
            p.kill()
            p.wait()
