"""Starting or joining a Ray cluster, and the watchdog that takes a local one down with its driver.

Shared by the two jobs that use Ray (``llm-rec batch`` and ``llm-rec fit --ray-address``); it
imports nothing of the pipeline, so both can use it without an import circle.
"""

from .cluster import cleanup_ray, fit_ray_cluster, local_cluster_cpus, ray_cluster, ray_registry

__all__ = ["cleanup_ray", "fit_ray_cluster", "local_cluster_cpus", "ray_cluster", "ray_registry"]
