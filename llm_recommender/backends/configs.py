"""The backends' configs: the ``Settings`` fields each backend reads, and nothing else.

Field names are the ``Settings`` names (``vllm_<field>`` for the vLLM engine's own), so
``Config.from_settings(settings)`` and ``config.settings_update(settings)`` map one to the
other. Secrets stay out: the upstream API key is read from ``Settings`` (its own
environment variable) only, so a config written to JSON never carries it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..configurable import ComponentConfig
from ..settings import DEFAULT_MODEL

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class FakeConfig(ComponentConfig):
    """The scripted fake's knobs (its scripted callables are constructor arguments, not config)."""

    model_name: str = "fake-model"
    context_length: int = Field(default=8192, ge=1)
    leftover_mass: float = Field(default=0.3, ge=0, lt=1, description="probability kept for tokens outside those asked for")
    supports_logprobs: bool = True
    supports_json_schema: bool = True
    supports_permutation_decoding: bool = False


class TransformersConfig(ComponentConfig):
    score_neutral = frozenset({"threads", "batch_size"})
    model: str = DEFAULT_MODEL
    dtype: Dtype = "auto"
    device: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    pad_batches_on_cpu: bool = False


class VLLMConfig(ComponentConfig):
    settings_prefix = "vllm_"
    score_neutral = frozenset({"kv_cache_gib", "gpu_memory_utilization", "enforce_eager", "max_logprobs", "in_process",
                               "cpu_threads_bind"})
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    dtype: Dtype = "auto"
    permutation_seed: int = 0  # the engine's seed
    kv_cache_gib: float = Field(default=1.0, gt=0)
    max_model_len: int | None = Field(default=4096, ge=128)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    enforce_eager: bool | None = None
    max_logprobs: int = Field(default=32, ge=1)
    in_process: bool = False
    cpu_threads_bind: str | None = None


class OpenAIConfig(ComponentConfig):
    score_neutral = frozenset({"request_timeout", "max_retries", "retry_backoff", "batch_size"})
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    served_model: str | None = None
    tokenizer: str | None = None
    request_timeout: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff: float = Field(default=0.5, ge=0)
    top_logprobs: int = Field(default=20, ge=1)
    batch_size: int = Field(default=16, ge=1)
