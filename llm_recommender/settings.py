"""One pydantic settings object for the whole pipeline; round-trips to JSON.

Environment variables (``LLM_REC_*``) override defaults, e.g. ``LLM_REC_THREADS=2``.
Secrets have names of their own: the upstream server's key (backend "openai") is
``LLM_REC_UPSTREAM_API_KEY``, the key that protects ``llm-rec serve`` is
``LLM_REC_SERVER_API_KEY``. ``LLM_REC_API_KEY``, which both once read, is read by neither,
so the server's secret is never sent upstream as a bearer token.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The one default model id (an alias of the embedded copy, see model_store); everything imports it from here.
DEFAULT_MODEL = "smollm2-135m-instruct"


def secret_from_env(env_source: Callable[[], dict[str, Any]], field: str, env_name: str) -> Callable[[], dict[str, Any]]:
    """``env_source`` with ``field`` read from ``env_name`` only, never from ``LLM_REC_<FIELD>``."""

    def read() -> dict[str, Any]:
        values = {k: v for k, v in env_source().items() if k != field}
        if os.environ.get(env_name):
            values[field] = os.environ[env_name]
        return values

    return read


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_REC_", extra="forbid")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):  # type: ignore[no-untyped-def, override]
        return init_settings, secret_from_env(env_settings, "api_key", "LLM_REC_UPSTREAM_API_KEY"), dotenv_settings, file_secret_settings

    model: str = Field(default=DEFAULT_MODEL, description="model alias, local folder, or Hugging Face id")
    backend: str = "transformers"
    strategy: str = "verbalizer"
    # Measured with eval/bench_latency.py on an otherwise idle 2-core machine: 2 threads ran the
    # verbalizer pass 2.0x faster than 1 (1.96 s vs 3.92 s p50), so the default is torch's own
    # (all cores). Set 1 when other processes share the cores (see README).
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads (None: torch default, all cores)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' ... (auto: accelerate device_map on GPUs)")
    template_dir: Path | None = Field(default=None, description="folder with your own *.j2 templates")
    calibrator: Path | None = Field(default=None, description="JSON file of a fitted calibrator for the default strategy")
    calibrators: dict[str, Path] = Field(default_factory=dict, description="strategy -> JSON file of its fitted calibrator")

    # prompt budget
    max_history: int = Field(default=50, ge=0, description="most recent history items considered")
    max_prompt_tokens: int | None = Field(default=None, description="default: the model's context length minus output reserve")
    output_reserve_tokens: int = Field(default=256, ge=1)
    max_title_chars: int = Field(default=160, ge=8, description="longer titles are truncated in prompts (noted)")
    max_description_chars: int = Field(default=300, ge=0)

    # strategies
    permutations: int = Field(default=1, ge=1, le=16, description="verbalizer: shuffles averaged to reduce position bias")
    permutation_seed: int = 0
    permutation_mode: Literal["random", "cyclic"] = Field(
        default="random", description="verbalizer orders: identity + seeded shuffles, or evenly spaced cyclic shifts "
        "(with permutations = candidates, each candidate visits each position once)")
    label_prior: bool = Field(default=False, description="verbalizer: divide out the model's label prior, measured once per "
                              "model, template and candidate count on a content-free list (contextual calibration)")
    listwise_retries: int = Field(default=2, ge=0, le=5, description="re-asks after invalid listwise output")
    listwise_max_tokens: int = Field(default=400, ge=16)
    listwise_decoding: Literal["auto", "constrained", "validated"] = Field(
        default="auto", description="constrained: every token masked so the ranking is a permutation by construction; "
        "validated: JSON schema, then validate / re-ask / fall back; auto: constrained where the backend can")
    listwise_keys: Literal["ids", "labels"] = Field(default="ids", description="what the ranking lists: candidate ids, or labels A, B, ...")
    listwise_top_k: int | None = Field(default=None, ge=1, description="rank only the best k; the rest keep the verbalizer's order (None: all)")
    reason_max_chars: int = Field(default=200, ge=20)
    reason_max_tokens: int = Field(default=60, ge=8)
    reason_history_choices: int = Field(default=10, ge=1, description="recent history titles a reason may refer to")
    pointwise_prefix_reuse: bool = True
    batch_size: int = Field(default=16, ge=1, description="prompts per forward pass (GPU; on CPU full prompts go one by one)")
    retrieve_candidates: int = Field(default=50, ge=1, le=200, description="bundle: candidates retrieved from the catalogue when a request gives none")
    pad_batches_on_cpu: bool = Field(default=False, description="CPU: batch full prompts with left padding as on GPUs (slower; tests the padded path)")

    # vLLM engine (backend "vllm") and the server `llm-rec serve-model` starts
    vllm_kv_cache_gib: float = Field(default=1.0, gt=0, description="CPU build: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)")
    vllm_max_model_len: int | None = Field(default=4096, ge=128, description="context the engine reserves (None: the model's)")
    vllm_gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1, description="GPU build: share of GPU memory")
    vllm_enforce_eager: bool | None = Field(default=None, description="None: eager on CPU (skips ~60 s of torch.compile), graphs on GPU")
    vllm_max_logprobs: int = Field(default=32, ge=1, description="most label log-probs per request (>= candidates)")
    vllm_in_process: bool = Field(default=False, description="engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): starts faster, less memory, but ran 4-7x slower per request on the 2-core CPU machines (eval/bench_backends.py)")
    vllm_cpu_threads_bind: str | None = Field(default=None, description="CPU build: VLLM_CPU_OMP_THREADS_BIND, e.g. '0' (one thread on core 0), '0-1', 'nobind' (None: vLLM's 'auto')")

    # OpenAI-compatible server (backend "openai")
    base_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8000/v1 (env LLM_REC_BASE_URL)")
    api_key: SecretStr | None = Field(
        default=None, description="sent as Bearer token to base_url (env LLM_REC_UPSTREAM_API_KEY; default: OPENAI_API_KEY or 'EMPTY')"
    )
    served_model: str | None = Field(default=None, description="model name on the server (default: the only one it serves)")
    tokenizer: str | None = Field(default=None, description="tokenizer folder/id for the chat template (default: model)")
    request_timeout: float = Field(default=120.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(default=3, ge=0, le=10, description="retries on 429/5xx/connection errors/invalid JSON")
    retry_backoff: float = Field(default=0.5, ge=0, description="first retry delay in seconds, doubled each retry")
    top_logprobs: int = Field(default=20, ge=1, description="servers without exact label log-probs: top-k asked for")

    def updated(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` applied; a bad name or value is a typed error naming it."""
        from pydantic import ValidationError

        from .errors import from_validation_error

        try:
            return type(self).model_validate(self.model_dump() | changes)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
