"""The backends' configs: what each backend reads, and nothing else.

Each real backend's config is its ``Settings`` section (``settings.transformers``,
``settings.vllm``, ``settings.openai``: the ``*Options`` classes) plus the model fields
the backends share, which ``Settings`` keeps once at its top level (``model``, ``dtype``,
``tokenizer``, ``batch_size``); the Recommender joins the two in one place
(:func:`~llm_recommender.recommender.component_config`). Secrets stay out: the upstream
API key is a constructor argument of the openai backend, so a config written to JSON
never carries it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..configurable import ComponentConfig

# The one default model id (an alias of the embedded copy, see model_store); also exported by settings.
from ..model_store import DEFAULT_MODEL

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class FakeConfig(ComponentConfig):
    """The scripted fake's knobs (its scripted callables are constructor arguments, not config)."""

    model_name: str = "fake-model"
    context_length: int = Field(default=8192, ge=1)
    leftover_mass: float = Field(default=0.3, ge=0, lt=1, description="probability kept for tokens outside those asked for")
    supports_logprobs: bool = True
    supports_json_schema: bool = True
    supports_permutation_decoding: bool = False


class TransformersOptions(ComponentConfig):
    """``settings.transformers``: the in-process backend's own knobs (flat names: the same)."""

    # Measured with eval/bench_latency.py on an otherwise idle 2-core machine: 2 threads ran the
    # verbalizer pass 2.0x faster than 1 (1.96 s vs 3.92 s p50), so the default is torch's own
    # (all cores). Set 1 when other processes share the cores (see docs/benchmarks.md).
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads (None: torch default, all cores)")
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' ... (auto: accelerate device_map on GPUs)")
    pad_batches_on_cpu: bool = Field(default=False, description="CPU: batch full prompts with left padding as on GPUs "
                                     "(slower; tests the padded path)")
    cpu_attention: Literal["auto", "blocked", "sdpa"] = Field(
        default="auto", description="CPU attention kernel: 'blocked' (this package's, faster on AVX512-BF16 CPUs "
        "without AMX), 'sdpa' (torch's flash kernel, faster on AMX CPUs); auto picks by the CPU's flags")
    draft_rankings: bool = Field(
        default=True, description="constrained listwise: check a drafted ranking (the open keys in the presented "
        "order) in one pass and keep what greedy decoding agrees with; the same ranking in fewer passes")
    listwise_key_choice: Literal["whole", "token"] = Field(
        default="whole", description="constrained listwise with keys of several tokens (ids): 'whole' picks, at each "
        "slot, the open key with the highest log-prob of being written whole (all its tokens and the closing token; "
        "one packed pass per slot), so rank 1 is the key with the highest reported probability; 'token' decodes "
        "greedily token by token, as vLLM does (a key is committed to by its first token)")


class TransformersConfig(TransformersOptions):
    score_neutral = frozenset({"threads", "batch_size", "cpu_attention", "draft_rankings"})
    model: str = DEFAULT_MODEL
    dtype: Dtype = "auto"
    batch_size: int = Field(default=16, ge=1)


class VLLMOptions(ComponentConfig):
    """``settings.vllm``: the vLLM engine's (and `llm-rec serve-model`'s server's) knobs (flat names: ``vllm_<field>``)."""

    settings_prefix = "vllm_"
    kv_cache_gib: float = Field(default=1.0, gt=0, description="CPU build: VLLM_CPU_KVCACHE_SPACE (GiB of KV cache)")
    max_model_len: int | None = Field(default=4096, ge=128, description="context the engine reserves (None: the model's)")
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1, description="GPU build: share of GPU memory")
    enforce_eager: bool | None = Field(default=None, description="None: eager on CPU (skips ~60 s of torch.compile), "
                                       "graphs on GPU")
    max_logprobs: int = Field(default=32, ge=1, description="most label log-probs per request (>= candidates)")
    in_process: bool = Field(default=False, description="engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): "
                             "starts faster, less memory, but ran 4-7x slower per request on the 2-core CPU machines "
                             "(eval/bench_backends.py)")
    cpu_threads_bind: str | None = Field(default=None, description="CPU build: VLLM_CPU_OMP_THREADS_BIND, e.g. '0' "
                                         "(one thread on core 0), '0-1', 'nobind' (None: vLLM's 'auto')")


class VLLMConfig(VLLMOptions):
    score_neutral = frozenset({"kv_cache_gib", "gpu_memory_utilization", "enforce_eager", "max_logprobs", "in_process",
                               "cpu_threads_bind"})
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    dtype: Dtype = "auto"
    permutation_seed: int = 0  # the engine's seed (the pipeline passes the verbalizer's)


class OpenAIOptions(ComponentConfig):
    """``settings.openai``: the OpenAI-compatible client's knobs (flat names: the same)."""

    base_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8000/v1 (env LLM_REC_BASE_URL)")
    served_model: str | None = Field(default=None, description="model name on the server (default: the only one it serves)")
    request_timeout: float = Field(default=120.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(default=3, ge=0, le=10, description="retries on 429/5xx/connection errors/invalid JSON")
    retry_backoff: float = Field(default=0.5, ge=0, description="first retry delay in seconds, doubled each retry")
    top_logprobs: int = Field(default=20, ge=1, description="servers without exact label log-probs: top-k asked for")


class OpenAIConfig(OpenAIOptions):
    score_neutral = frozenset({"request_timeout", "max_retries", "retry_backoff", "batch_size"})
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    batch_size: int = Field(default=16, ge=1)
