"""Tokenization shared by the backends, and the base of the two token-id backends.

The transformers backend tokenizes with :class:`TokenizerMixin`; the vLLM and
OpenAI-compatible backends (:class:`TokenIdBackend`) apply the chat template and tokenize
*locally* with it too, and send token ids to the engine/server. So the three backends see the same
token sequence for the same rendered prompt, and the agreement between them measures
the numerics only, never a tokenization difference (BOS added or not, a space merged
across the prefix/suffix boundary of the pointwise prompt...).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from .base import Backend


@functools.lru_cache(maxsize=8)  # read-only use; several backends of one model share it
def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the tokenizer {name_or_path!r}: {exc}. The chat template is applied locally: "
            "set `tokenizer` to a local folder or a Hugging Face id this machine can reach.",
            param="tokenizer",
        ) from exc


class TokenizerMixin:
    """``chat_prompt``/``count_tokens``/``single_token_id`` over a Hugging Face tokenizer."""

    tokenizer: Any

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant:"

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def single_token_id(self, text: str) -> int | None:
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None


class TokenIdBackend(TokenizerMixin, Backend):
    """A backend that scores token id lists (vLLM, an OpenAI-compatible server).

    Subclasses implement :meth:`_score_ids`. Prefix and suffixes are tokenized separately,
    as the transformers backend's KV-cache reuse does, so all backends see the same token
    split; the engine's or server's prefix cache then shares the prefix's KV blocks.
    """

    @abc.abstractmethod
    def _score_ids(self, prompts: list[list[int]], token_ids: Sequence[int]) -> np.ndarray:
        """Next-token log-probabilities of ``token_ids`` after each prompt, ``(len(prompts), len(token_ids))``."""

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        return self._score_ids([self.encode(p) for p in prompts], token_ids)

    def prefix_next_token_logprobs(self, prefix: str, suffixes: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        head = self.encode(prefix)
        return self._score_ids([head + self.encode(s) for s in suffixes], token_ids)
