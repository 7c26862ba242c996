"""Any OpenAI-compatible server (``llm-rec serve-model``/``vllm serve`` first of all) over HTTP.

Endpoint: the **completions** endpoint, with the chat template applied *here* and the
prompt sent as token ids. Not chat: the ``Backend`` seam works on rendered prompts
(the pointwise strategy splits one into a shared prefix and per-candidate suffixes),
and sending the same token ids as the in-process backends is what makes scores agree
across backends; a chat endpoint would re-apply a template we cannot see. The
tokenizer is therefore loaded locally (``config.tokenizer``, default ``config.model``).

Scoring asks for one token with ``temperature=0`` and log-probabilities:

* vLLM servers take ``logprob_token_ids`` (extra body) and return the exact log-prob
  of every label, with ``return_tokens_as_token_ids`` so tokens come back as ids.
* Other servers only return a top-k (``top_logprobs``). Labels found there are exact;
  if a label is missing, a :class:`CapabilityError` is raised: there is no correct
  value to fill in, so no score is guessed.

Soft tokens (the trained ranker's item tokens) go as ``prompt_embeds``: the whole prompt's input embeddings,
each token's row read here from the served weights' embedding table (so ``model`` or ``tokenizer`` must be
the local folder the server loaded, as for ``llm-rec serve-model --bundle``), the soft rows in their slots.
The server must run with ``--enable-prompt-embeds``; vLLM reads the tensor with ``torch.load(weights_only=True)``.

Structured output is ``response_format={"type": "json_schema", ...}``; a server that
ignores it returns free text, which the scorers' validation and re-ask then handle.

Permutation-constrained listwise (``constrained.py``) needs the server to run our vLLM
logits processor (``llm-rec serve-model`` registers it). The spec travels in
``vllm_xargs``, which other servers ignore or refuse, so the first listwise call asks
the server once with a spec that only a constraining server can satisfy exactly;
without it the listwise scorer keeps its validate / re-ask / fall back path.

Transport: timeouts per request; bounded retries with exponential backoff (honouring
``Retry-After``) on 429, 5xx, connection errors, timeouts, and replies that are not the
JSON the API promises. Other 4xx errors are not retried and name what to fix.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from pydantic import SecretStr

from ..errors import BackendError, CapabilityError, InvalidRequestError
from ..model_store import is_alias, resolve_model
from ..structured import ParseFailure, parse_ranking
from ._tokenizer import TokenIdBackend, load_tokenizer
from .base import EmbedsPrompt, Generation
from .configs import OpenAIConfig
from .constrained import hf_spec

log = logging.getLogger(__name__)
T = TypeVar("T")

_TOKEN_ID_PREFIX = "token_id:"
MAX_PARALLEL_REQUESTS = 16


class MalformedResponse(Exception):
    """A 2xx reply that is not the JSON shape of the OpenAI API."""


class OpenAIBackend(TokenIdBackend):
    name = "openai"
    config_class = OpenAIConfig
    supports_logprobs = True
    supports_json_schema = True
    supports_prompt_embeds = True  # on a server started with --enable-prompt-embeds (else a CapabilityError)

    def __init__(self, config: OpenAIConfig | dict[str, Any] | None = None, *, client: Any = None,
                 api_key: SecretStr | str | None = None, **kwargs: Any) -> None:
        """``config`` (or keyword arguments) as for every component; ``api_key``: the bearer token for
        ``base_url``, never part of the config (default: ``LLM_REC_UPSTREAM_API_KEY``, then
        ``OPENAI_API_KEY``, then ``'EMPTY'``; never the server's own ``LLM_REC_SERVER_API_KEY``)."""
        super().__init__()
        self.config: OpenAIConfig = self.validate_config(config, kwargs)  # type: ignore[assignment]
        try:
            import openai
        except ImportError as exc:
            raise BackendError("backend 'openai' needs the openai client: pip install 'llm-recommender[openai]'",
                               param="backend") from exc
        self._openai = openai
        base_url = self.config.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise InvalidRequestError(
                "backend 'openai' needs base_url, e.g. http://127.0.0.1:8000/v1 (see `llm-rec serve-model`)",
                param="base_url",
            )
        self.base_url = base_url.rstrip("/")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        key = key or os.environ.get("LLM_REC_UPSTREAM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        # The client's own retries are off: ours are bounded, logged and also cover invalid JSON.
        self.client = client or openai.OpenAI(base_url=self.base_url, api_key=key or "EMPTY",
                                              timeout=self.config.request_timeout, max_retries=0)
        self.retries_done = 0
        self._embedding_table: Any = None  # the served weights' input embeddings, read on first use
        self._permutations_ok: bool | None = None  # asked once, on first use
        self._card = self._model_card()
        self.served_model = str(self._card["id"])
        self.tokenizer = load_tokenizer(self._tokenizer_source())

    # ---- setup ------------------------------------------------------------------
    def _tokenizer_source(self) -> str:
        if self.config.tokenizer:
            return resolve_model(self.config.tokenizer)
        model = self.config.model
        if is_alias(model) or os.path.exists(os.path.expanduser(model)):
            return resolve_model(model)
        root = self._card.get("root")  # vLLM reports the folder/id it loaded
        if isinstance(root, str) and os.path.isdir(root):
            return root
        return model  # a hub id

    def _model_card(self) -> dict[str, Any]:
        """The served model: ``served_model``, else ``model`` if served, else the only one served."""
        listing = self._call(lambda: self.client.models.list(), "GET /models")
        cards = [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in getattr(listing, "data", None) or []]
        names = [str(c.get("id")) for c in cards]
        for wanted in (self.config.served_model, self.config.model):
            if wanted and wanted in names:
                return cards[names.index(wanted)]
        if self.config.served_model:
            raise InvalidRequestError(f"the server at {self.base_url} does not serve {self.config.served_model!r}; "
                                      f"it serves: {', '.join(names) or 'nothing'}", param="served_model")
        if len(cards) == 1:
            return cards[0]
        raise InvalidRequestError(f"the server at {self.base_url} serves {len(cards)} models ({', '.join(names)}); "
                                  "choose one with served_model", param="served_model")

    # ---- description --------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.config.model if is_alias(self.config.model) else self.served_model

    @property
    def context_length(self) -> int:
        n = self._card.get("max_model_len") or getattr(self.tokenizer, "model_max_length", None) or 2048
        return int(min(n, 1_000_000))

    # ---- transport ----------------------------------------------------------------
    def _call(self, fn: Callable[[], T], what: str) -> T:
        openai = self._openai
        attempts = self.config.max_retries + 1
        last: str = ""
        for attempt in range(attempts):
            delay = self.config.retry_backoff * (2**attempt) * (1 + 0.1 * random.random())
            try:
                return fn()
            except openai.APIStatusError as exc:
                status = exc.status_code
                last = f"HTTP {status}: {_server_message(exc)}"
                if status not in (408, 409, 429) and status < 500:
                    raise self._client_error(exc, what) from None
                retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
                if retry_after:
                    try:
                        delay = max(delay, min(float(retry_after), 30.0))
                    except ValueError:
                        pass
            except openai.APITimeoutError:
                last = f"no reply within {self.config.request_timeout:g} s"
            except openai.APIConnectionError as exc:
                last = f"connection failed: {exc.__cause__ or exc}"
            except (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                last = f"invalid reply: {exc}"
            if attempt + 1 < attempts:
                self.retries_done += 1
                log.warning("%s to %s failed (%s); retry %d/%d in %.1f s", what, self.base_url, last, attempt + 1,
                            attempts - 1, delay)
                time.sleep(delay)
        raise BackendError(f"{what} to {self.base_url} failed after {attempts} attempt(s): {last}", param="base_url")

    def _client_error(self, exc: Any, what: str) -> BackendError:
        status, message = exc.status_code, _server_message(exc)
        if status in (401, 403):
            return BackendError(f"{what}: the server refused the credentials (HTTP {status}): {message}", param="api_key")
        if status == 404:
            return BackendError(f"{what}: not found (HTTP 404): {message}. Is base_url the /v1 root and the model "
                                "served?", param="base_url")
        lowered = message.lower()
        if "prompt_embeds" in lowered or "prompt-embeds" in lowered:
            return CapabilityError(f"the server takes no prompt embeddings as asked (HTTP {status}): {message}. "
                                   "Start it with `llm-rec serve-model --bundle BUNDLE` (or vLLM's "
                                   "--enable-prompt-embeds)", param="backend")
        for word, capability in (("logprob", "log-probabilities"), ("response_format", "JSON-schema output"),
                                 ("structured", "JSON-schema output")):
            if word in lowered:
                return CapabilityError(f"the server cannot provide {capability} as asked (HTTP {status}): {message}",
                                       param="backend")
        return BackendError(f"{what}: the server rejected the request (HTTP {status}): {message}", param="backend")

    def _completions(self, prompts: list[list[int]], what: str, *, embeds: list[str] | None = None,
                     **kwargs: Any) -> list[Any]:
        """``prompts`` as token ids, or (``embeds``) base64 tensors of input embeddings, ``prompts`` their ids."""
        def call() -> list[Any]:
            if embeds is None:
                resp = self.client.completions.create(model=self.served_model, prompt=prompts, temperature=0.0,
                                                      **kwargs)
            else:  # kwargs stay as they are: a retry sends the same request
                body = {**kwargs.get("extra_body", {}), "prompt_embeds": embeds}
                rest = {k: v for k, v in kwargs.items() if k != "extra_body"}
                resp = self.client.completions.create(model=self.served_model, prompt=None, temperature=0.0,
                                                      extra_body=body, **rest)
            choices = getattr(resp, "choices", None)
            if not isinstance(choices, list) or len(choices) != len(prompts):
                raise MalformedResponse(f"expected {len(prompts)} choices, got {type(choices).__name__}"
                                        f"{'' if not isinstance(choices, list) else f' of {len(choices)}'}")
            usage = getattr(resp, "usage", None)
            self.stats.add(prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or sum(len(p) for p in prompts)),
                           completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0), forward_passes=1)
            return sorted(choices, key=lambda c: getattr(c, "index", 0) or 0)

        return self._call(call, what)

    def _parallel(self, jobs: list[Callable[[], T]]) -> list[T]:
        if len(jobs) <= 1:
            return [job() for job in jobs]
        # Each job runs in a copy of the caller's context, so its usage reaches the caller's meters.
        contexts = [contextvars.copy_context() for _ in jobs]
        with ThreadPoolExecutor(max_workers=min(len(jobs), MAX_PARALLEL_REQUESTS)) as pool:
            return list(pool.map(lambda pair: pair[0].run(pair[1]), zip(contexts, jobs)))

    # ---- scoring ------------------------------------------------------------------
    def _label_logprobs(self, choice: Any, ids: list[int]) -> list[float]:
        logprobs = getattr(choice, "logprobs", None)
        top = getattr(logprobs, "top_logprobs", None) if logprobs is not None else None
        if not top or not isinstance(top[0], dict):
            raise CapabilityError("the server returned no log-probabilities; the verbalizer and pointwise strategies "
                                  "need them (use the listwise strategy, or a server with logprobs)", param="backend")
        found: dict[int, float] = {}
        for key, value in top[0].items():
            if key.startswith(_TOKEN_ID_PREFIX):
                found[int(key[len(_TOKEN_ID_PREFIX):])] = float(value)
            else:  # a server that ignored return_tokens_as_token_ids: map the text back
                tid = self.single_token_id(key) if key else None
                if tid is not None:
                    found.setdefault(tid, float(value))
        missing = [t for t in ids if t not in found]
        if missing:
            names = [self.tokenizer.convert_ids_to_tokens(t) for t in missing[:5]]
            raise CapabilityError(
                f"the server returned log-probs for its top {len(top[0])} tokens only, and {len(missing)} label token(s) "
                f"{names} are not among them; their log-probs are unknown, so no score is given. Use a vLLM server "
                "(it returns exact label log-probs via logprob_token_ids) or fewer candidates.",
                param="backend",
            )
        return [found[t] for t in ids]

    def _score_ids(self, prompts: list[list[int]], token_ids: Sequence[int],
                   embeds: list[str] | None = None) -> np.ndarray:
        ids = [int(t) for t in token_ids]
        extra = {"logprob_token_ids": ids, "return_tokens_as_token_ids": True}
        k = min(len(ids), self.config.top_logprobs)
        bs = self.config.batch_size
        starts = range(0, len(prompts), bs)
        jobs = [lambda i=i: self._completions(prompts[i : i + bs], "POST /completions (scoring)", max_tokens=1,
                                              logprobs=k, extra_body=dict(extra),
                                              embeds=None if embeds is None else embeds[i : i + bs])
                for i in starts]
        rows = [self._label_logprobs(choice, ids) for choices in self._parallel(jobs) for choice in choices]
        return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(ids))

    # ---- soft tokens (prompt embeddings) -------------------------------------------
    def embeds_next_token_logprobs(self, prompts: Sequence[EmbedsPrompt], token_ids: Sequence[int]) -> np.ndarray:
        """Each prompt's input embeddings (its tokens' rows of the served weights, ``vectors`` at ``positions``)
        as ``prompt_embeds``; the label log-probabilities as for token ids."""
        return self._score_ids([list(p.ids) for p in prompts], token_ids, [self._encoded_embeds(p) for p in prompts])

    def _encoded_embeds(self, p: EmbedsPrompt) -> str:
        import base64
        import io

        import torch

        rows = self.input_embeddings(p.ids)
        if p.positions:
            rows[list(p.positions)] = p.vectors.detach().to("cpu", torch.float32)
        buf = io.BytesIO()
        torch.save(rows.contiguous(), buf)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def input_embeddings(self, ids: Sequence[int]) -> Any:
        """``(len(ids), hidden)`` float32 input embeddings of token ``ids`` as the served model computes them: its
        embedding table (from the local folder the server loaded), scaled where the architecture scales it."""
        import torch

        if self._embedding_table is None:
            self._embedding_table = _input_embedding_table(self._tokenizer_source())
        return self._embedding_table[torch.as_tensor(list(ids), dtype=torch.long)].clone()

    # ---- generation ---------------------------------------------------------------
    def generate_batch(
        self, prompts: Sequence[str], *, max_tokens: int, json_schemas: Sequence[dict[str, Any] | None]
    ) -> list[Generation]:
        encoded = [self.encode(p) for p in prompts]
        groups: dict[str, list[int]] = {}  # one request per distinct schema, requests in parallel
        for i, schema in enumerate(json_schemas):
            groups.setdefault(json.dumps(schema, sort_keys=True), []).append(i)

        def job(key: str, idxs: list[int]) -> list[tuple[int, Generation]]:
            schema = json.loads(key)
            extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}} if schema else None
            choices = self._completions([encoded[i] for i in idxs], "POST /completions (generation)",
                                        max_tokens=max_tokens, extra_body=extra)
            out = []
            for i, choice in zip(idxs, choices):
                text = getattr(choice, "text", None)
                if not isinstance(text, str):
                    raise BackendError("the server's completion has no text", param="backend")
                finish = "length" if getattr(choice, "finish_reason", None) == "length" else "stop"
                out.append((i, Generation(text=text, finish_reason=finish, prompt_tokens=len(encoded[i]),
                                          completion_tokens=self.count_tokens(text))))
            return out

        results: list[Generation | None] = [None] * len(prompts)
        for pairs in self._parallel([lambda k=k, v=v: job(k, v) for k, v in groups.items()]):
            for i, gen in pairs:
                results[i] = gen
        return results  # type: ignore[return-value]

    def can_decode_permutations(self) -> bool:
        if self._permutations_ok is None:
            self._permutations_ok = self._probe_permutations()
        return self._permutations_ok

    def _probe_permutations(self) -> bool:
        """Does the server constrain? An unconstrained model writing exactly this ranking is practically impossible."""
        keys = ["q7z", "x3v"]
        try:
            (gen,) = self._constrained_generations([self.chat_prompt([{"role": "user", "content": "Say hi."}])], [keys], [2])
            parse_ranking(gen.text, keys)
        except (BackendError, ParseFailure) as exc:
            log.info("the server at %s does not constrain listwise rankings (%s); listwise output is validated",
                     self.base_url, exc)
            return False
        return True

    def generate_permutations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                              ks: Sequence[int], *, key_logprobs: bool = False) -> list[Generation]:
        if not self.can_decode_permutations():
            raise CapabilityError(f"the server at {self.base_url} does not run the permutation logits processor "
                                  "(start it with `llm-rec serve-model`)", param="backend")
        first = self._first_key_logprobs(prompts, keys) if key_logprobs else [None] * len(prompts)
        gens = self._constrained_generations(prompts, keys, ks)
        for gen, lp in zip(gens, first):
            gen.key_logprobs = lp
        return gens

    def _constrained_generations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                                 ks: Sequence[int]) -> list[Generation]:
        specs = [hf_spec(self.tokenizer, kk, k) for kk, k in zip(keys, ks)]
        encoded = [self.encode(p) for p in prompts]

        def job(i: int) -> Generation:  # one request each: every prompt has its own spec
            spec = specs[i]
            (choice,) = self._completions([encoded[i]], "POST /completions (constrained listwise)",
                                          max_tokens=spec.max_tokens(),
                                          extra_body={"vllm_xargs": spec.to_xargs(), "stop_token_ids": [spec.eos]})
            text = getattr(choice, "text", None)
            if not isinstance(text, str):
                raise BackendError("the server's completion has no text", param="backend")
            finish = "length" if getattr(choice, "finish_reason", None) == "length" else "stop"
            return Generation(text=text, finish_reason=finish, prompt_tokens=len(encoded[i]),
                              completion_tokens=self.count_tokens(text))

        return self._parallel([lambda i=i: job(i) for i in range(len(prompts))])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pragma: no cover
            pass


def _input_embedding_table(folder: str) -> Any:
    """The input embedding table of the weights in ``folder`` (float32), times the scale the architecture applies
    to it (Gemma: sqrt(hidden)). Read from the safetensors files without loading the model."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    if not os.path.isdir(folder):
        raise CapabilityError(f"prompt embeddings over HTTP need the served weights' folder on this machine (for "
                              f"their embedding table); {folder!r} is not one: set model or tokenizer to it",
                              param="tokenizer")
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        embedding = AutoModelForCausalLM.from_config(config).get_input_embeddings()
    scale = float(config.hidden_size) ** 0.5 if hasattr(embedding, "embed_scale") else 1.0
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")):
        with safe_open(os.path.join(folder, name), "pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open has keys(), no __iter__
                if key.endswith("embed_tokens.weight"):
                    table = weights.get_tensor(key).float()
                    return table * torch.tensor(scale, dtype=table.dtype) if scale != 1.0 else table
    raise CapabilityError(f"no input embedding table (*embed_tokens.weight) in the safetensors of {folder}",
                          param="tokenizer")


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(body.get("message"), str):
            return body["message"][:500]
    return str(getattr(exc, "message", exc))[:500]
