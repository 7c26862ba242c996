"""Backends, registered by name and imported lazily (torch/vLLM only when used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..errors import UnknownNameError
from ..settings import Settings
from .base import Backend, Generation

# name -> "module:Class"; each class takes (settings) in its constructor.
BACKENDS: dict[str, str] = {
    "transformers": "llm_recommender.backends.transformers_backend:TransformersBackend",
    "fake": "llm_recommender.backends.fake:FakeBackend",
}


def backend_class(name: str) -> Callable[..., Backend]:
    if name not in BACKENDS:
        raise UnknownNameError("backend", name, BACKENDS, param="backend")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, settings: Settings) -> Backend:
    cls = backend_class(name)
    if name == "fake":
        return cls()
    return cls(settings)


__all__ = ["BACKENDS", "Backend", "Generation", "backend_class", "make_backend"]
