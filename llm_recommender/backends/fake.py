"""A scripted backend for unit tests: deterministic, instant, and it records every call.

It tokenizes on whitespace/punctuation, treats any run of non-space characters as one
token, and answers with whatever the test scripted:

* ``score_fn(prompt, token_text) -> logit`` decides next-token preferences (default: all
  equal). A fixed share of probability (``leftover_mass``) is kept for "other tokens",
  as a real model does, so scorers must renormalize.
* ``generations`` is a list of strings (consumed in order) or a callable
  ``(prompt, json_schema) -> str``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .base import Backend, Generation

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def default_generation(prompt: str, json_schema: dict[str, Any] | None) -> str:
    """A well-formed answer for any schema the project uses (ranking in given order, or a reason)."""
    props = (json_schema or {}).get("properties", {})
    if "ranking" in props:
        items = props["ranking"].get("items", {})
        ids = items.get("enum")
        if ids is None and "$ref" in items:  # pydantic puts Literal enums in $defs sometimes
            ids = next(iter(json_schema.get("$defs", {}).values()), {}).get("enum", [])
        return json.dumps({"ranking": ids or []})
    if "reason" in props:
        return json.dumps({"reason": "fake reason: similar to your history"})
    return "ok"


class FakeBackend(Backend):
    name = "fake"

    def __init__(
        self,
        score_fn: Callable[[str, str], float] | None = None,
        generations: Sequence[str] | Callable[[str, dict[str, Any] | None], str] | None = None,
        *,
        context_length: int = 8192,
        leftover_mass: float = 0.3,
        model_name: str = "fake-model",
        supports_logprobs: bool = True,
        supports_json_schema: bool = True,
    ) -> None:
        super().__init__()
        self.score_fn = score_fn or (lambda prompt, token: 0.0)
        if generations is None:
            generations = default_generation
        self._generations = generations if callable(generations) else list(generations)
        self._context_length = context_length
        self._leftover = leftover_mass
        self._model_name = model_name
        self.supports_logprobs = supports_logprobs  # type: ignore[misc]
        self.supports_json_schema = supports_json_schema  # type: ignore[misc]
        self._vocab: dict[str, int] = {}
        self._inv: dict[int, str] = {}
        self.calls: list[tuple[str, Any]] = []

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def context_length(self) -> int:
        return self._context_length

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
