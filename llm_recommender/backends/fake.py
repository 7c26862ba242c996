"""A scripted backend for unit tests: deterministic, instant, and it records every call.

It tokenizes on whitespace/punctuation, treats any run of non-space characters as one
token, and answers with whatever the test scripted:

* ``score_fn(prompt, token_text) -> logit`` decides next-token preferences (default: all
  equal). A fixed share of probability (``leftover_mass``) is kept for "other tokens",
  as a real model does, so scorers must renormalize.
* ``generations`` is a list of strings (consumed in order) or a callable
  ``(prompt, json_schema) -> str``.
* With ``supports_permutation_decoding=True``, ``generate_permutations`` runs the real
  state machine of ``constrained.py`` over a character-level vocabulary; at each step
  ``permutation_choice(prompt, allowed_texts) -> text`` picks among the allowed tokens
  (default: the first), so a test can script an adversarial "model".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from .base import Backend, Generation
from .configs import FakeConfig
from .constrained import PermutationState, build_spec

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def default_generation(prompt: str, json_schema: dict[str, Any] | None) -> str:
    """A well-formed answer for any schema the project uses (ranking in given order, or a reason)."""
    props = (json_schema or {}).get("properties", {})
    if "ranking" in props:
        items = props["ranking"].get("items", {})
        ids = items.get("enum")
        if ids is None and "$ref" in items:  # pydantic puts Literal enums in $defs sometimes
            ids = next(iter((json_schema or {}).get("$defs", {}).values()), {}).get("enum", [])
        return json.dumps({"ranking": ids or []})
    if "reason" in props:
        return json.dumps({"reason": "It is much like what you watched before."})
    return "ok"


class FakeBackend(Backend):
    name = "fake"
    config_class = FakeConfig
    config: FakeConfig

    def __init__(
        self,
        score_fn: Callable[[str, str], float] | None = None,
        generations: Sequence[str] | Callable[[str, dict[str, Any] | None], str] | None = None,
        *,
        permutation_choice: Callable[[str, list[str]], str] | None = None,
        config: FakeConfig | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` are :class:`FakeConfig` fields (``model_name``, ``context_length``, ``supports_logprobs``...)."""
        super().__init__()
        self.config = cast(FakeConfig, self.validate_config(config, kwargs))
        self.score_fn = score_fn or (lambda prompt, token: 0.0)
        if generations is None:
            generations = default_generation
        self._generations = generations if callable(generations) else list(generations)
        self._leftover = self.config.leftover_mass
        self.supports_logprobs = self.config.supports_logprobs  # type: ignore[misc]
        self.supports_json_schema = self.config.supports_json_schema  # type: ignore[misc]
        self.supports_permutation_decoding = self.config.supports_permutation_decoding  # type: ignore[misc]
        self.permutation_choice = permutation_choice or (lambda prompt, allowed: allowed[0])
        self._vocab: dict[str, int] = {}
        self._inv: dict[int, str] = {}
        self.calls: list[tuple[str, Any]] = []

    @property
    def model_name(self) -> str:
        return self.config.model_name

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        parts = [f"<|{m['role']}|>\n{m['content']}\n" for m in messages]
        return "".join(parts) + "<|assistant|>\n"

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN_RE.findall(text))

    def single_token_id(self, text: str) -> int | None:
        if len(_TOKEN_RE.findall(text)) != 1 or _TOKEN_RE.fullmatch(text) is None:
            return None
        if text not in self._vocab:
            self._vocab[text] = len(self._vocab) + 1000
            self._inv[self._vocab[text]] = text
        return self._vocab[text]

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        self.require("logprobs")
        self.calls.append(("next_token_logprobs", list(prompts)))
        return self._logprobs(prompts, token_ids)

    def _logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        out = np.empty((len(prompts), len(token_ids)))
        for r, prompt in enumerate(prompts):
            self.stats.add(prompt_tokens=self.count_tokens(prompt), forward_passes=1)
            logits = np.array([self.score_fn(prompt, self._inv[t]) for t in token_ids], dtype=float)
            # Keep `leftover_mass` of the probability on tokens outside `token_ids`.
            probs = np.exp(logits - logits.max())
            probs = probs / probs.sum() * (1.0 - self._leftover)
            out[r] = np.log(probs)
        return out

    def prefix_next_token_logprobs(self, prefix: str, suffixes: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        self.require("logprobs")
        self.calls.append(("prefix_next_token_logprobs", (prefix, list(suffixes))))
        return self._logprobs([prefix + s for s in suffixes], token_ids)

    def generate(self, prompts: Sequence[str], *, max_tokens: int, json_schema: dict[str, Any] | None = None) -> list[Generation]:
        if json_schema is not None:
            self.require("json_schema")
        self.calls.append(("generate", (list(prompts), json_schema)))
        out = []
        for prompt in prompts:
            if callable(self._generations):
                text = self._generations(prompt, json_schema)
            elif self._generations:
                text = self._generations.pop(0)
            else:
                raise AssertionError("FakeBackend ran out of scripted generations")
            n = self.count_tokens(text)
            finish = "length" if n > max_tokens else "stop"
            self.stats.add(prompt_tokens=self.count_tokens(prompt), completion_tokens=min(n, max_tokens))
            out.append(Generation(text=text, finish_reason=finish, prompt_tokens=self.count_tokens(prompt), completion_tokens=min(n, max_tokens)))
        return out

    def generate_permutations(self, prompts: Sequence[str], keys: Sequence[Sequence[str]],
                              ks: Sequence[int], *, key_logprobs: bool = False) -> list[Generation]:
        self.require("permutation_decoding")
        self.calls.append(("generate_permutations", (list(prompts), [list(k) for k in keys], list(ks))))
        out = []
        for prompt, kk, k in zip(prompts, keys, ks):
            spec = build_spec(_char_encode, _char_decode, _CHAR_EOS, kk, k)
            state = PermutationState(spec)
            tokens: list[int] = []
            while not state.done and len(tokens) < spec.max_tokens():
                allowed = {_char_decode([t]) or "<eos>": t for t in state.allowed()}
                tokens.append(allowed[self.permutation_choice(prompt, list(allowed))])
                state.advance(tokens[-1])
            text = _char_decode(tokens)
            self.stats.prompt_tokens += self.count_tokens(prompt)
            self.stats.completion_tokens += len(tokens)
            out.append(Generation(text=text, finish_reason="stop", prompt_tokens=self.count_tokens(prompt),
                                  completion_tokens=len(tokens)))
        if key_logprobs:
            for gen, lp in zip(out, self._first_key_logprobs(prompts, keys)):
                gen.key_logprobs = lp
        return out


_CHAR_EOS = 0  # character-level vocabulary of generate_permutations: token = code point + 1


def _char_encode(text: str) -> list[int]:
    return [ord(c) + 1 for c in text]


def _char_decode(ids: list[int]) -> str:
    return "".join(chr(i - 1) for i in ids if i != _CHAR_EOS)
