"""A local Ray cluster started by a batch driver goes away with the driver, even after ``kill -9``.

Ray ties its GCS server and raylet to the driver that started them, but after a ``kill -9`` of the
driver its ``DashboardAgent`` and ``RuntimeEnvAgent`` keep running and ignore SIGTERM (measured with
Ray 2.60; see ray-project/ray#59162). So a driver that starts a local cluster:

1. marks it: ``LLM_REC_RAY_OWNER=<driver pid>:<driver start time>:<run>`` is in its environment for
   ``ray.init``, so the processes the driver starts for the cluster (GCS, raylet, monitors) carry it;
2. starts a watchdog (this file run as a script, in its own session, so a kill of the driver's
   process group spares it). While the driver lives, the watchdog records the marked processes and
   all their descendants (the agents and workers: their titles overwrite their environment, so the
   mark cannot be read there) in a registry file. When the pipe it reads from the driver closes,
   however the driver ended, it ends every recorded process still alive: SIGTERM, then SIGKILL.

``llm-rec batch --cleanup`` (:func:`cleanup`) ends the recorded processes of every driver that is
gone, should its watchdog have been killed too; each local ``llm-rec batch`` does the same first.
A process is ended only if its pid and start time match the record. Processes of a cluster the job
joins (``--address``) are not the driver's and are never recorded.

This file imports only the standard library and psutil: the watchdog runs it as a script.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OWNER_ENV = "LLM_REC_RAY_OWNER"
GRACE_S = 2.0  # SIGTERM, then SIGKILL for whatever is left after this long
SETTLE_S = 10.0  # keep ending this long at most
TICK_S = 0.5  # how often the watchdog records the cluster's processes


def owner_token(pid: int | None = None) -> str:
    """``pid:start-time:run`` for a cluster this process (or ``pid``) starts: no later process with that pid,
    and no other run of the same driver, shares it."""
    import uuid

    import psutil

    proc = psutil.Process(pid)
    return f"{proc.pid}:{proc.create_time():.2f}:{uuid.uuid4().hex[:8]}"


def _same(pid: int, created: float) -> Any:
    """The live process ``pid`` if it started at ``created`` (not a later one with a reused pid), else None."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 0.02 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def owner_alive(token: str) -> bool:
    try:
        pid, created = token.split(":")[:2]
        return _same(int(pid), float(created)) is not None
    except ValueError:
        return False


def _mark(proc: Any) -> str | None:
    import psutil

    try:
        return proc.environ().get(OWNER_ENV)
    except (psutil.Error, OSError):
        return None


def cluster_processes(token: str) -> dict[int, float]:
    """pid -> start time of the driver's children marked ``token`` and of all their descendants."""
    import psutil

    pid = int(token.split(":")[0])
    found: dict[int, float] = {}
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return found
    for root in children:
        if _mark(root) != token:
            continue
        try:
            for proc in [root, *root.children(recursive=True)]:
                found[proc.pid] = proc.create_time()
        except psutil.Error:
            continue
    return found


def end_processes(recorded: dict[int, float], settle_s: float = SETTLE_S) -> list[int]:
    """End the recorded processes still alive: SIGTERM, then SIGKILL after :data:`GRACE_S`. Their pids."""
    import psutil

    signalled: dict[int, float] = {}
    deadline = time.monotonic() + settle_s
    while True:
        live = [p for p in (_same(pid, created) for pid, created in recorded.items()) if p is not None]
        if not live or time.monotonic() > deadline:
            return sorted(signalled)
        now = time.monotonic()
        for proc in live:
            try:
                if proc.pid not in signalled:
                    signalled[proc.pid] = now
                    proc.send_signal(signal.SIGTERM)
                elif now - signalled[proc.pid] > GRACE_S:
                    proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        time.sleep(0.1)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def cleanup(registry: Path) -> list[int]:
    """``llm-rec batch --cleanup``: end what is left of the local clusters of every batch driver that is gone."""
    ended: list[int] = []
    for path in sorted(Path(registry).glob("*.json")) if Path(registry).is_dir() else []:
        data = _read(path)
        if data is None or owner_alive(str(data.get("owner", ""))):
            continue  # a driver still running (its watchdog ends its cluster), or a file being written
        recorded = {int(pid): float(t) for pid, t in data.get("processes", {}).items()}
        ended += end_processes(recorded, settle_s=GRACE_S + 3)
        path.unlink(missing_ok=True)
    return ended


def start_watchdog(token: str, registry: Path) -> subprocess.Popen[bytes]:
    """The watchdog for the cluster marked ``token``; the driver keeps the returned process (its pipe) open."""
    Path(registry).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "--watch", token, str(registry)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def _watch(token: str, registry: Path) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the driver's terminal is for the driver
    path = registry / f"{token.replace(':', '-')}.json"
    recorded: dict[int, float] = {}
    fd = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([fd], [], [], TICK_S)
        if ready and not os.read(fd, 1 << 16):
            break  # the driver has exited, however it exited (or closed the pipe after its shutdown)
        now = cluster_processes(token)
        if not now.items() <= recorded.items():
            recorded.update(now)
            _write(path, {"owner": token, "processes": recorded})
    recorded.update(cluster_processes(token))  # a driver that only closed the pipe is still their parent
    end_processes(recorded)
    path.unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--watch":
        _watch(sys.argv[2], Path(sys.argv[3]))
    else:
        sys.exit("usage: ray_cleanup.py --watch PID:START:RUN REGISTRY_DIR")
