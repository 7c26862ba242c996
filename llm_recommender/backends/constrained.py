"""Permutation-constrained decoding of ``{"ranking": [...]}``: a valid, duplicate-free ranking by construction.

A schema enum with a fixed length cannot forbid repeated ids, and small models repeat
them nearly always. Here a small state machine over token ids forces the JSON skeleton
(``{"ranking": ["``, ``", "``, ``"]}``, then end-of-sequence) and, inside each id slot,
allows only tokens that continue a candidate key not emitted yet (a trie over the
keys' tokenizations). After ``k`` keys the list is closed, so ``k < n`` gives a top-k
ranking. The output is still parsed by the same pydantic contract
(:func:`~llm_recommender.structured.parse_ranking`).

It works on token ids only, so one implementation serves every engine: the
transformers backend's own greedy loop (which also jumps over forced tokens, and verifies a
drafted rest of the ranking, :meth:`PermutationState.draft`, in one pass), vLLM's V1 logits processor
(``constrained_vllm.py``), and vLLM's OpenAI server (the spec travels as JSON in
``vllm_xargs``). Pieces are tokenized separately; the spec is only built when the
concatenation decodes back to exactly the JSON text (byte-level BPE tokenizers do; a
tokenizer that adds a prefix space would not, and then the validated path runs).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import CapabilityError

OPEN, SEP, CLOSE = '{"ranking": ["', '", "', '"]}'
XARG = "llm_rec_permutation"  # key in SamplingParams.extra_args / vllm_xargs


class PermutationSpec(BaseModel):
    """Token-level description of the output: ``open key (sep key)* close eos`` with ``k`` distinct keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    open: tuple[int, ...] = Field(min_length=1)
    sep: tuple[int, ...] = Field(min_length=1)
    close: tuple[int, ...] = Field(min_length=1)
    items: tuple[tuple[int, ...], ...] = Field(min_length=1)
    k: int = Field(ge=1)
    eos: int = Field(ge=0)

    def max_tokens(self) -> int:
        """Exact upper bound on the output length (the ``k`` longest keys, plus skeleton and eos)."""
        longest = sorted((len(i) for i in self.items), reverse=True)[: self.k]
        return len(self.open) + sum(longest) + (self.k - 1) * len(self.sep) + len(self.close) + 1

    def to_xargs(self) -> dict[str, str]:
        # vllm_xargs values may only be flat (str | number | list of those): the spec goes as one JSON string.
        return {XARG: self.model_dump_json()}

    @classmethod
    def from_xargs(cls, extra_args: dict[str, Any] | None) -> PermutationSpec | None:
        """The spec in ``extra_args``, None if absent; ``ValueError`` (pydantic's) if malformed."""
        raw = (extra_args or {}).get(XARG)
        if raw is None:
            return None
        return cls.model_validate_json(raw) if isinstance(raw, str) else cls.model_validate(raw)


def build_spec(encode: Callable[[str], list[int]], decode: Callable[[list[int]], str], eos: int,
               keys: Sequence[str], k: int | None = None) -> PermutationSpec:
    """The spec for ranking ``k`` (default all) of ``keys``; :class:`CapabilityError` if this tokenizer cannot do it."""
    keys = list(keys)
    if not keys or len(set(keys)) != len(keys):
        raise CapabilityError("constrained listwise decoding needs distinct, non-empty keys", param="candidates")
    k = len(keys) if k is None else min(k, len(keys))
    texts = [json.dumps(key)[1:-1] for key in keys]  # the JSON-escaped text inside the quotes
    spec = PermutationSpec(open=tuple(encode(OPEN)), sep=tuple(encode(SEP)), close=tuple(encode(CLOSE)),
                           items=tuple(tuple(encode(t)) for t in texts), k=k, eos=eos)
    if any(not item for item in spec.items):
        raise CapabilityError("a candidate key encodes to no tokens", param="candidates")
    # Separately tokenized pieces must decode to the JSON text, or the parse would see other ids.
    tokens = list(spec.open)
    for i, item in enumerate(spec.items[:k]):
        tokens += (list(spec.sep) if i else []) + list(item)
    tokens += list(spec.close)
    expected = OPEN + SEP.join(texts[:k]) + CLOSE
    if decode(tokens) != expected:
        raise CapabilityError("this tokenizer does not round-trip separately tokenized JSON pieces; "
                              "constrained listwise decoding is unavailable for it", param="model")
    _Trie(spec)  # raises on an ambiguous key/separator boundary
    return spec


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    end: int | None = None  # index of the key that ends here
    keys: set[int] = field(default_factory=set)  # keys in this subtree


class _Trie:
    def __init__(self, spec: PermutationSpec) -> None:
        self.root = _Node()
        for idx, item in enumerate(spec.items):
            node = self.root
            node.keys.add(idx)
            for tok in item:
                node = node.children.setdefault(tok, _Node())
                node.keys.add(idx)
            node.end = idx
        exits = {spec.sep[0], spec.close[0]}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.end is not None and exits & node.children.keys():
                raise CapabilityError("a candidate key continues with the separator's first token; constrained "
                                      "listwise decoding cannot tell where it ends", param="candidates")
            stack.extend(node.children.values())


class PermutationState:
    """Where one generation is in the spec; feed it the generated tokens, ask what may come next.

    Never raises while decoding (it runs inside engines): a token outside the spec
    (only possible if something else changed the logits) marks it ``broken`` and it
    stops constraining; the parser then judges the output as usual.
    """

    def __init__(self, spec: PermutationSpec) -> None:
        self.spec = spec
        self._trie = _Trie(spec)
        self.emitted: list[int] = []
        self.broken = False
        self.consumed = 0
        self._fixed: list[int] = list(spec.open)  # forced tokens still to come
        self._after_fixed = "item"  # phase once _fixed drains: "item" | "eos" | "done"
        self._node: _Node | None = None
        self._depth = 0  # tokens of the current key emitted so far

    def clone(self) -> PermutationState:
        """An independent copy (the trie is shared: it never changes)."""
        other = copy.copy(self)
        other.emitted, other._fixed = list(self.emitted), list(self._fixed)
        return other

    @property
    def done(self) -> bool:
        return self._after_fixed == "done" and not self._fixed

    def _exit_token(self) -> int:
        return self.spec.sep[0] if len(self.emitted) + 1 < self.spec.k else self.spec.close[0]

    def allowed(self) -> list[int]:
        """Token ids allowed next (empty once broken: no constraint)."""
        if self.broken:
            return []
        if self._fixed:
            return [self._fixed[0]]
        if self._after_fixed != "item":
            return [self.spec.eos]
        node = self._node or self._trie.root
        used = set(self.emitted)
        out = [tok for tok, child in node.children.items() if child.keys - used]
        if node is not self._trie.root and node.end is not None and node.end not in used:
            out.append(self._exit_token())
        return out

    def advance(self, token: int) -> None:
        if self.broken or self.done:
            return
        if token not in self.allowed():
            self.broken = True
            return
        if self._fixed:
            self._fixed.pop(0)
            if not self._fixed and self._after_fixed == "eos":
                self._fixed, self._after_fixed = [self.spec.eos], "done"
            return
        if self._after_fixed != "item":
            return
        node = self._node or self._trie.root
        if token in node.children:
            self._node = node.children[token]
            self._depth += 1
            return
        # The exit token: the key at this node is complete.
        assert node.end is not None
        self.emitted.append(node.end)
        self._node, self._depth = None, 0
        if len(self.emitted) < self.spec.k:
            self._fixed = list(self.spec.sep[1:])
            self._after_fixed = "item"
        else:
            self._fixed = list(self.spec.close[1:])
            self._after_fixed = "eos"
            if not self._fixed:
                self._fixed, self._after_fixed = [self.spec.eos], "done"

    def echo_order(self) -> list[int]:
        """The keys not emitted yet, in the presented order, starting after the last one emitted.

        What small models mostly write (they echo the list), so it makes a good draft."""
        n = len(self.spec.items)
        start = self.emitted[-1] + 1 if self.emitted else 0
        used = set(self.emitted)
        return [i % n for i in range(start, start + n) if i % n not in used]

    def draft(self, order: Sequence[int]) -> list[int]:
        """The tokens that would finish the output (eos excluded) emitting the open keys in ``order``.

        A guess for draft-and-verify decoding: the engine checks all of it in one pass and keeps
        the longest prefix that its own (masked, greedy) choices agree with, so the result is
        what token-by-token decoding gives. ``order`` must list every key still open; a key
        already begun is finished first. Empty once broken or done."""
        probe, out = self.clone(), []
        rank = {key: r for r, key in enumerate(order)}
        target: int | None = None
        while not probe.broken and not probe.done:
            allowed = probe.allowed()
            if len(allowed) == 1:
                token = allowed[0]
            else:
                node = probe._node or probe._trie.root
                if target is None or target in probe.emitted:
                    target = min(node.keys - set(probe.emitted), key=lambda k: rank.get(k, len(rank)))
                item = self.spec.items[target]
                token = item[probe._depth] if probe._depth < len(item) else probe._exit_token()
            if token == self.spec.eos:
                break
            probe.advance(token)
            out.append(token)
        return out

    def consume(self, output_ids: Sequence[int]) -> None:
        """Advance over the tokens of ``output_ids`` not seen yet (the list only grows)."""
        for tok in output_ids[self.consumed :]:
            self.advance(int(tok))
        self.consumed = len(output_ids)

    def mask(self, logits: Any) -> Any:
        """``logits`` (1-D torch tensor over the vocabulary) with every disallowed token at -inf."""
        allowed = [t for t in self.allowed() if t < logits.shape[-1]]
        if not allowed:  # broken, or ids beyond this vocabulary: leave the row alone rather than fail the engine
            return logits
        import torch

        index = torch.tensor(allowed, device=logits.device)
        out = torch.full_like(logits, float("-inf"))
        out[index] = logits[index]
        return out


def hf_spec(tokenizer: Any, keys: Sequence[str], k: int | None = None) -> PermutationSpec:
    """:func:`build_spec` with a Hugging Face tokenizer (no special tokens added)."""
    if tokenizer.eos_token_id is None:
        raise CapabilityError("the tokenizer has no end-of-sequence token", param="model")
    return build_spec(lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"]),
                      lambda ids: tokenizer.decode(ids, skip_special_tokens=False), int(tokenizer.eos_token_id), keys, k)
