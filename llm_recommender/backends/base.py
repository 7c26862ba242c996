"""The ``Backend`` seam: the only place that talks to a language model.

A backend implements a handful of primitive operations on *rendered text prompts*
(chat template already applied by :meth:`Backend.chat_prompt`). Scorers are written
against these primitives only, so a scripted fake at this seam is enough to test
everything above it.

Capabilities are class flags; a scorer that needs a missing capability gets a
:class:`~llm_recommender.errors.CapabilityError` rather than a silent wrong score.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..configurable import ComponentConfig, Configurable
from ..errors import CapabilityError
from .constrained import OPEN


@dataclass
class Generation:
    """One generated completion."""

    text: str
    finish_reason: str = "stop"  # "stop" | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # generate_permutations(key_logprobs=True): log-prob of writing each key at the first key's slot
    # (its one token; keys of several tokens: all of them and the closing token, where the backend can)
    key_logprobs: list[float] | None = None
    # generate_permutations: how each key was chosen. "token": greedy token by token (a key of
    # several tokens is committed to by its first); "whole": by the log-prob of writing it whole
    # (its tokens and the closing token), the quantity key_logprobs reports for the first slot
    key_choice: str = "token"


@dataclass
class UsageMeter:
    """What the backend calls made inside one :func:`metered` block spent."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    forward_passes: int = 0

    def snapshot(self) -> tuple[int, int, int]:
        return (self.prompt_tokens, self.completion_tokens, self.forward_passes)


# The meters open in this thread / task. A ContextVar, not an attribute of the backend: rankings
# that overlap (threads, the server's concurrency) each see only their own calls.
_METERS: ContextVar[tuple[UsageMeter, ...]] = ContextVar("llm_rec_usage_meters", default=())
_LOCK = threading.Lock()  # a backend may count from worker threads (the openai backend's parallel requests)


@contextmanager
def metered() -> Iterator[UsageMeter]:
    """Count what the backend calls made in this block (and in no other thread's) spend."""
    meter = UsageMeter()
    token = _METERS.set(_METERS.get() + (meter,))
    try:
        yield meter
    finally:
        _METERS.reset(token)


@dataclass
class BackendStats(UsageMeter):
    """A backend's lifetime totals; per-call usage goes to the open :func:`metered` blocks too."""

    def add(self, prompt_tokens: int = 0, completion_tokens: int = 0, forward_passes: int = 0) -> None:
        """Record one call's usage: in these totals and in every meter open in the caller's context."""
        with _LOCK:
            for target in (self, *_METERS.get()):
                target.prompt_tokens += prompt_tokens
                target.completion_tokens += completion_tokens
                target.forward_passes += forward_passes


@dataclass(frozen=True)
class EmbedsPrompt:
    """Token ids of a prompt, and the input embeddings that replace those at ``positions`` (soft tokens)."""

    ids: list[int]
    positions: list[int]
    vectors: Any  # torch.Tensor (len(positions), hidden_size)


class Backend(Configurable, abc.ABC):
    """A language model that can score next tokens and generate (optionally JSON-constrained) text."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[ComponentConfig]] = ComponentConfig
    supports_logprobs: ClassVar[bool] = True
    supports_json_schema: ClassVar[bool] = True
    # Can force a duplicate-free ranking token by token (backends/constrained.py).
    supports_permutation_decoding: ClassVar[bool] = False
    supports_hidden_states: ClassVar[bool] = False  # hidden_states(): item representations for the bundle
    # embeds_next_token_logprobs(): prompts whose marked positions carry given input embeddings (soft item tokens)
    supports_prompt_embeds: ClassVar[bool] = False

    @property
    def shares_prompt_starts(self) -> bool:
        """True where one ``next_token_logprobs`` call computes a start its prompts share only once
        (so the numbers depend on what else is in the call): callers that must answer a request
        the same alone or batched then send each request's prompts in a call of their own."""
        return False

    def __init__(self) -> None:
        self.stats = BackendStats()

    # ---- description ------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Name reported in responses (model id, folder name or alias): the config's ``model`` by default."""
        return getattr(self.config, "model")  # noqa: B009 - ComponentConfig declares no model; backends' configs do

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """Maximum tokens (prompt + completion) the model accepts."""

    # ---- tokenization -------------------------------------------------------------
    @abc.abstractmethod
    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """Apply the model's chat template with the generation prompt appended."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` (no special tokens added)."""

    @abc.abstractmethod
    def single_token_id(self, text: str) -> int | None:
        """The token id if ``text`` encodes to exactly one token, else ``None``."""

    # ---- scoring ------------------------------------------------------------------
    @abc.abstractmethod
    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        """Log-probabilities (full-vocabulary log-softmax) of ``token_ids`` as the next token.

        Returns an array of shape ``(len(prompts), len(token_ids))``.
        """

    def prefix_next_token_logprobs(
        self, prefix: str, suffixes: Sequence[str], token_ids: Sequence[int]
    ) -> np.ndarray:
        """Like :meth:`next_token_logprobs` for prompts ``prefix + suffix``.

        Backends that can reuse the prefix computation (KV cache, prefix caching) override
        this; the default simply concatenates.
        """
        return self.next_token_logprobs([prefix + s for s in suffixes], token_ids)

    # ---- generation ---------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        json_schema: dict[str, Any] | None = None,
    ) -> list[Generation]:
        """Greedy generation; with ``json_schema`` the output is constrained to it. A backend implements
        this or :meth:`generate_batch` (an engine that batches prompts with different schemas in one call)."""
        return self.generate_batch(prompts, max_tokens=max_tokens, json_schemas=[json_schema] * len(prompts))

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        max_tokens: int,
        json_schemas: Sequence[dict[str, Any] | None],
    ) -> list[Generation]:
        """One greedy generation per prompt, each under its own schema (or none).

        The default generates prompt by prompt; engines that batch requests with
        different schemas (vLLM, HTTP servers) override it with one call.
        """
        if type(self).generate is Backend.generate:
            raise NotImplementedError(f"{type(self).__name__} implements neither generate nor generate_batch")
        out: list[Generation] = []
        for prompt, schema in zip(prompts, json_schemas):
            out.extend(self.generate([prompt], max_tokens=max_tokens, json_schema=schema))
        return out

    def can_decode_permutations(self) -> bool:
        """Whether :meth:`generate_permutations` works here (a remote server may have to be asked first)."""
        return self.supports_permutation_decoding

    def generate_permutations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                              ks: Sequence[int], *, key_logprobs: bool = False) -> list[Generation]:
        """One greedy ``{"ranking": [...]}`` per prompt: ``ks[i]`` distinct keys of ``keys[i]``, by construction.

        With ``key_logprobs`` each generation also carries the full-vocabulary log-prob of writing
        every key where the first key starts (the model's first choice): the key's token for
        single-token keys; for keys of several tokens, all of them and the token that closes the
        key, where the backend can score them (else None).
        """
        raise CapabilityError(f"backend {self.name!r} cannot constrain a ranking to a permutation", param="backend")

    def _first_key_logprobs(self, prompts: Sequence[str], keys: Sequence[Sequence[str]]) -> list[list[float] | None]:
        """``key_logprobs`` by a scoring pass over each prompt followed by the ranking's opening:
        engines with prefix caching reuse that pass for the generation. Single-token keys only (else None)."""
        found = [[self.single_token_id(k) for k in kk] for kk in keys]
        ids = {i: [t for t in row if t is not None] for i, row in enumerate(found) if row and None not in row}
        out: list[list[float] | None] = [None] * len(prompts)
        if ids:
            union = sorted({t for row in ids.values() for t in row})
            column = {t: j for j, t in enumerate(union)}
            lp = self.next_token_logprobs([prompts[i] + OPEN for i in ids], union)
            for r, (i, row) in enumerate(ids.items()):
                out[i] = [float(lp[r, column[t]]) for t in row]
        return out

    def hidden_states(self, texts: Sequence[str], *, layers: Sequence[int], pooling: str = "mean") -> list[Any]:
        """Per layer, an array (len(texts), hidden_size) of hidden states pooled over each text's tokens
        (``mean``) or taken at its last token (``last``). Backends with ``supports_hidden_states``."""
        self.require("hidden_states")
        raise NotImplementedError

    def embeds_next_token_logprobs(self, prompts: Sequence[EmbedsPrompt], token_ids: Sequence[int]) -> np.ndarray:
        """As :meth:`next_token_logprobs` for prompts given as token ids whose ``positions`` take the given
        input-embedding rows (``vectors``, a float tensor (len(positions), hidden_size)) instead of their
        tokens' embeddings. Backends with ``supports_prompt_embeds``."""
        self.require("prompt_embeds")
        raise NotImplementedError

    def embeds_logprobs_at(self, prompts: Sequence[EmbedsPrompt], at: Sequence[Sequence[int]],
                           token_ids: Sequence[int]) -> list[np.ndarray]:
        """For each prompt (as in :meth:`embeds_next_token_logprobs`) and each position ``k`` of its ``at``, the
        next-token log-probabilities of ``token_ids`` given the prompt up to ``k``: ``(len(at[r]),
        len(token_ids))`` (the ranker's slot readout). Here: one prompt per position, cut after it (a causal
        LM's numbers are the same); backends that read every position in one pass override it."""
        self.require("prompt_embeds")
        cut = [EmbedsPrompt(p.ids[: k + 1], [q for q in p.positions if q <= k],
                            p.vectors[[i for i, q in enumerate(p.positions) if q <= k]])
               for p, ks in zip(prompts, at) for k in ks]
        flat = self.embeds_next_token_logprobs(cut, token_ids) if cut else np.zeros((0, len(token_ids)))
        ends = np.cumsum([len(ks) for ks in at])[:-1]
        return list(np.split(flat, ends)) if len(at) else []

    def hidden_state_identity(self) -> dict[str, Any]:
        """``num_layers``, ``hidden_size`` and what vectors depend on (config, dtype, a weights sample)."""
        self.require("hidden_states")
        raise NotImplementedError

    # ---- helpers shared by all backends ---------------------------------------------
    def require(self, capability: str) -> None:
        if not getattr(self, f"supports_{capability}", False):
            raise CapabilityError(
                f"backend {self.name!r} cannot provide {capability}; choose another strategy or backend",
                param="backend",
            )

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release  # pragma: no cover
        """Release resources (processes, sessions)."""
