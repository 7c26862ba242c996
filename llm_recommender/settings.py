"""One pydantic settings object for the whole pipeline; round-trips to JSON.

Environment variables (``LLM_REC_*``) override defaults, e.g. ``LLM_REC_THREADS=2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLM_REC_", extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="model alias, local folder, or Hugging Face id")
    backend: str = "transformers"
    strategy: str = "verbalizer"
    # Measured with eval/bench_latency.py on an otherwise idle 2-core machine: 2 threads ran the
    # verbalizer pass 2.0x faster than 1 (1.96 s vs 3.92 s p50), so the default is torch's own
    # (all cores). Set 1 when other processes share the cores (see README).
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (None: torch default, all cores)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' ... (auto: accelerate device_map on GPUs)")
    template_dir: Path | None = Field(None, description="folder with your own *.j2 templates")
    calibrator: Path | None = Field(None, description="JSON file of a fitted calibrator")

    # prompt budget
    max_history: int = Field(50, ge=0, description="most recent history items considered")
    max_prompt_tokens: int | None = Field(None, description="default: the model's context length minus output reserve")
    output_reserve_tokens: int = Field(256, ge=1)
    max_title_chars: int = Field(160, ge=8, description="longer titles are truncated in prompts (noted)")
    max_description_chars: int = Field(300, ge=0)

    # strategies
    permutations: int = Field(1, ge=1, le=16, description="verbalizer: shuffles averaged to reduce position bias")
    permutation_seed: int = 0
    permutation_mode: Literal["random", "cyclic"] = Field(
        "random", description="verbalizer orders: identity + seeded shuffles, or evenly spaced cyclic shifts "
        "(with permutations = candidates, each candidate visits each position once)")
    label_prior: bool = Field(False, description="verbalizer: divide out the model's label prior, measured once per "
                              "model, template and candidate count on a content-free list (contextual calibration)")
    listwise_retries: int = Field(2, ge=0, le=5, description="re-asks after invalid listwise output")
    listwise_max_tokens: int = Field(400, ge=16)
    listwise_decoding: Literal["auto", "constrained", "validated"] = Field(
        "auto", description="constrained: every token masked so the ranking is a permutation by construction; "
        "validated: JSON schema, then validate / re-ask / fall back; auto: constrained where the backend can")
    listwise_keys: Literal["ids", "labels"] = Field("ids", description="what the ranking lists: candidate ids, or labels A, B, ...")
    listwise_top_k: int | None = Field(None, ge=1, description="rank only the best k; the rest keep the verbalizer's order (None: all)")
    reason_max_chars: int = Field(200, ge=20)
    reason_max_tokens: int = Field(60, ge=8)
    reason_history_choices: int = Field(10, ge=1, description="recent history titles a reason may refer to")
    pointwise_prefix_reuse: bool = True
    batch_size: int = Field(16, ge=1, description="prompts per forward pass (GPU; on CPU full prompts go one by one)")
    representation_head: Path | None = Field(None, description="strategy 'representation': folder of a head trained by `llm-rec tune head`")

    # vLLM engine (backend "vllm") and the server `llm-rec serve-model` starts
    vllm_kv_cache_gib: float = Field(1.0, gt=0, description="CPU build: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)")
    vllm_max_model_len: int | None = Field(4096, ge=128, description="context the engine reserves (None: the model's)")
    vllm_gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="GPU build: share of GPU memory")
    vllm_enforce_eager: bool | None = Field(None, description="None: eager on CPU (skips ~60 s of torch.compile), graphs on GPU")
    vllm_max_logprobs: int = Field(32, ge=1, description="most label log-probs per request (>= candidates)")
    vllm_in_process: bool = Field(False, description="engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): starts faster, less memory, but ran 4-7x slower per request on the 2-core CPU machines (eval/bench_backends.py)")
    vllm_cpu_threads_bind: str | None = Field(None, description="CPU build: VLLM_CPU_OMP_THREADS_BIND, e.g. '0' (one thread on core 0), '0-1', 'nobind' (None: vLLM's 'auto')")

    # OpenAI-compatible server (backend "openai")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1 (env LLM_REC_BASE_URL)")
    api_key: SecretStr | None = Field(None, description="sent as Bearer token; default: OPENAI_API_KEY or 'EMPTY'")
    served_model: str | None = Field(None, description="model name on the server (default: the only one it serves)")
    tokenizer: str | None = Field(None, description="tokenizer folder/id for the chat template (default: model)")
    request_timeout: float = Field(120.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(3, ge=0, le=10, description="retries on 429/5xx/connection errors/invalid JSON")
    retry_backoff: float = Field(0.5, ge=0, description="first retry delay in seconds, doubled each retry")
    top_logprobs: int = Field(20, ge=1, description="servers without exact label log-probs: top-k asked for")
