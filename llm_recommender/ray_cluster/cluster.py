"""Start or join the Ray cluster a job runs on: the one way ``llm-rec batch`` and ``llm-rec fit --ray-address`` do it.

A local cluster this driver starts gets the watchdog of :mod:`.ray_cleanup`, so that it goes away with the driver
(even after ``kill -9``); a cluster the driver joins (an address, ``RAY_ADDRESS``, or one already initialised in
this process) is left running.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError
from . import ray_cleanup


@contextmanager
def ray_cluster(address: str | None, *, num_cpus: int | None = None, who: str = "batch",
                missing: str = "Ray is not installed: pip install 'llm-recommender[batch]'",
                param: str = "address") -> Iterator[Any]:
    """``ray`` initialised on ``address`` (None: a local cluster of ``num_cpus`` CPUs, Ray's default when None).

    ``missing`` / ``param``: the typed error raised when Ray is not installed; ``who`` prefixes messages."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra the callers need; fails here, before any work, when absent
    except ModuleNotFoundError:
        raise InvalidRequestError(missing, param=param) from None
    started_here = not ray.is_initialized()
    watchdog = None
    if started_here:
        watchdog = _local_cluster_watchdog(address, who)
        try:
            ray.init(address=address, include_dashboard=False, logging_level="warning",  # pyright: ignore[reportArgumentType]  (ray takes names too)
                     log_to_driver=True, num_cpus=num_cpus if address is None else None)
        finally:
            if watchdog is not None:  # the cluster's processes have the mark; later children of the driver must not
                os.environ.pop(ray_cleanup.OWNER_ENV, None)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()  # the watchdog ends whatever the shutdown left, then exits


def local_cluster_cpus(workers: int, cpus_per_worker: float) -> int:
    """The CPUs of the local cluster ``llm-rec fit --ray-address local`` starts: ``workers`` x ``cpus_per_worker``,
    rounded up."""
    return math.ceil(workers * cpus_per_worker)


def fit_ray_cluster(address: str, workers: int, cpus_per_worker: float) -> Any:
    """The cluster of ``llm-rec fit --ray-address``: ``local`` starts one of :func:`local_cluster_cpus` CPUs,
    anything else is joined. One place for the fit's Ray steps, which share it."""
    local = address == "local"
    cpus = local_cluster_cpus(workers, cpus_per_worker) if local else None
    return ray_cluster(None if local else address, num_cpus=cpus,
                       who="fit", param="ray_address",
                       missing="Ray is not installed: pip install 'llm-recommender[batch]', or leave out --ray-address")


def ray_registry() -> Path:
    """Where watchdogs record the processes of the local clusters they watch (see :mod:`.ray_cleanup`)."""
    from ..model_store import cache_dir

    return cache_dir() / "ray-drivers"


def cleanup_ray() -> list[int]:
    """End what is left of the local Ray clusters of drivers that were killed; the pids ended."""
    return ray_cleanup.cleanup(ray_registry())


def _local_cluster_watchdog(address: str | None, who: str) -> Any:
    """For a local cluster this driver starts: end the leftovers of killed drivers, mark this cluster, watch it.

    See :mod:`.ray_cleanup`: after a ``kill -9`` of this driver its cluster goes away within seconds."""
    if address is not None or os.environ.get("RAY_ADDRESS") or os.environ.get(ray_cleanup.OWNER_ENV):
        return None  # joining a cluster (or inside one): not ours to end
    try:
        ended = cleanup_ray()
        token = ray_cleanup.owner_token()
    except ImportError:  # pragma: no cover - psutil comes with the batch extra
        return None
    if ended:
        print(f"{who}: ended {len(ended)} Ray process(es) left by a killed driver", file=sys.stderr, flush=True)
    os.environ[ray_cleanup.OWNER_ENV] = token
    return ray_cleanup.start_watchdog(token, ray_registry())
