"""The HTTP door: an OpenAI-compatible server (FastAPI + uvicorn) over the same pipeline.

``protocol`` holds the OpenAI request/response models, ``router`` the thin routes,
``serving`` the logic, ``gate`` bounded concurrency, ``guard`` the API key and body limit,
``errors`` the one exception-to-response mapping, ``metrics`` the Prometheus metrics.
"""

from .app import create_app, run_server
from .config import ServerSettings

__all__ = ["ServerSettings", "create_app", "run_server"]
