"""Prometheus metrics, one registry per app (so several apps can live in one process)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Paths are labels only when they are routes we serve, so label cardinality stays bounded.
KNOWN_PATHS = ("/v1/models", "/v1/chat/completions", "/v1/recommendations", "/health", "/metrics", "/openapi.json")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llm_rec_requests", "HTTP requests by path, method and status", ["path", "method", "status"], registry=r)
        self.errors = Counter("llm_rec_request_errors", "HTTP responses with status >= 400, by path and status", ["path", "status"], registry=r)
        self.latency = Histogram("llm_rec_request_duration_seconds", "Time from request to the last response byte", ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("llm_rec_inference_duration_seconds", "Time one batch of rankings ran on the inference thread", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("llm_rec_batch_size", "Requests ranked together in one batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.queue_depth = Gauge("llm_rec_queue_depth", "Requests waiting for an inference slot", registry=r)
        self.running = Gauge("llm_rec_inference_running", "Rankings running now", registry=r)
        self.cancelled = Counter("llm_rec_cancelled", "Queued requests dropped because the client disconnected", registry=r)
        self.model_ready = Gauge("llm_rec_model_ready", "1 once the model is loaded", registry=r)

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.requests.labels(label, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: counts every response (including ones other middleware short-circuits)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(scope.get("path", ""), scope.get("method", ""), status, time.perf_counter() - start)
