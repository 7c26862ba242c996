"""Backends, registered by name and imported lazily (torch/vLLM only when used)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from ..configurable import ComponentConfig
from ..errors import UnknownNameError
from .base import Backend, Generation

log = logging.getLogger(__name__)

# name -> "module:Class"; each class takes its own config (``config_class``) in its constructor.
BACKENDS: dict[str, str] = {
    "transformers": "llm_recommender.backends.transformers_backend:TransformersBackend",
    "fake": "llm_recommender.backends.fake:FakeBackend",
    "vllm": "llm_recommender.backends.vllm_backend:VLLMBackend",
    "openai": "llm_recommender.backends.openai_backend:OpenAIBackend",
}
# "auto" is not a class: the vLLM engine where it is installed and starts, else transformers.
AUTO = "auto"


def backend_class(name: str) -> Callable[..., Backend]:
    if name not in BACKENDS:
        raise UnknownNameError("backend", name, [*BACKENDS, AUTO], param="backend")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


ConfigFor = Callable[[str], ComponentConfig]


def make_backend(name: str, config_for: ConfigFor, **kwargs: Any) -> Backend:
    """The backend ``name``, built from ``config_for(name)`` (its own config) and ``kwargs``
    (what is not config, e.g. the openai backend's ``api_key``)."""
    if name == AUTO:
        return _auto_backend(config_for)
    cls = backend_class(name)
    if name == "fake":
        return cls(**kwargs)
    return cls(config_for(name), **kwargs)


def _auto_backend(config_for: ConfigFor) -> Backend:
    from .vllm_backend import vllm_installed

    if vllm_installed():
        try:
            return backend_class("vllm")(config_for("vllm"))
        except Exception as exc:  # installed but unusable here (no GPU for the CUDA build, ...)
            log.warning("backend 'auto': vLLM is installed but could not start (%s); using transformers", exc)
    return backend_class("transformers")(config_for("transformers"))


__all__ = ["AUTO", "BACKENDS", "Backend", "Generation", "backend_class", "make_backend"]
