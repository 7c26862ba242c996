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
# "auto" is not a class: the vLLM engine on a CUDA GPU (where it is installed and starts), else
# transformers. On CPU transformers is the choice by measurement: on the 2-core CPU machine, with
# equal threads, it ranked more users/s than the vLLM engine (3.25 vs 2.36 at c=1), started in
# 4.8 s rather than 25.6 s and used 1.4 GiB rather than 4.1 (eval/bench_backends.py, README).
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


def cuda_available() -> bool:
    """True where torch sees a CUDA GPU (False without torch)."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA setup: treat as CPU
        return False


def _auto_backend(config_for: ConfigFor) -> Backend:
    from . import vllm_backend

    if not cuda_available():
        # WARNING where vLLM is installed (its user may expect it), INFO where it is not.
        level = logging.WARNING if vllm_backend.vllm_installed() else logging.INFO
        log.log(level, "backend auto: transformers (CPU: it starts in ~11 s with 1.4 GiB; the vLLM engine ranked "
                "1.1-1.3x faster on 2 cores but took ~47 s and 4.2 GiB to start, see docs/vllm.md); "
                "pass --backend vllm for throughput")
        return backend_class("transformers")(config_for("transformers"))
    if not vllm_backend.vllm_installed():
        log.warning("backend auto: transformers (CUDA GPU, but vLLM is not installed: pip install "
                    "'llm-recommender[vllm]' for continuous batching); pass --backend transformers to silence this")
        return backend_class("transformers")(config_for("transformers"))
    try:
        backend = backend_class("vllm")(config_for("vllm"))
    except Exception as exc:  # installed but unusable here (a CPU-only build, no free GPU memory, ...)
        log.warning("backend auto: transformers (CUDA GPU, but vLLM could not start: %s); "
                    "pass --backend vllm to see the full error", exc)
        return backend_class("transformers")(config_for("transformers"))
    log.info("backend auto: vllm (CUDA GPU: continuous batching); pass --backend transformers to override")
    return backend


__all__ = ["AUTO", "BACKENDS", "Backend", "Generation", "backend_class", "cuda_available", "make_backend"]
