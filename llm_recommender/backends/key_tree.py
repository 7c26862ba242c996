"""Every open key of a ranking slot in one forward pass: the keys' tokens as a tree on the KV cache.

Constrained listwise decoding with keys of several tokens (ids) chooses, at each slot, the
key most likely to be written whole (``listwise_key_choice="whole"``). That needs each key's
tokens and the token that closes it scored after the same context. Keys share their first
tokens (ids ``1``, ``12``, ``123``), so they are laid out as a trie: one node per distinct
prefix, then under each key's end its tail (the closing token, and the separator's rest so
that the next slot's distribution is read too), all in one row after the cache. A node
attends to the cached context and to its ancestors only (tree attention, as in speculative
decoding's token trees), at the position its depth gives, so its logits are those a plain
forward pass of ``context + prefix`` gives.

This module builds the layout (pure Python and torch, no model); the transformers backend runs
the pass (:meth:`TransformersBackend._score_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KeyTree:
    tokens: list[int]  # one per node, in row order
    parents: list[int]  # each node's parent row, -1: the cached context
    paths: list[list[int]]  # per key: the rows of its tokens, then of its tail

    @classmethod
    def build(cls, items: Sequence[Sequence[int]], tail: Sequence[int]) -> KeyTree:
        """The trie of ``items``, with ``tail`` (the closing token, then what follows it) under each key's end."""
        tokens: list[int] = []
        parents: list[int] = []
        child: dict[tuple[int, int], int] = {}
        paths = []
        for item in items:
            node, path = -1, []
            for token in item:
                if (node, token) not in child:
                    child[node, token] = len(tokens)
                    tokens.append(int(token))
                    parents.append(node)
                node = child[node, token]
                path.append(node)
            for token in tail:  # never shared: each key's end is its own
                parents.append(node)
                node = len(tokens)
                tokens.append(int(token))
                path.append(node)
            paths.append(path)
        return cls(tokens=tokens, parents=parents, paths=paths)

    def depths(self) -> list[int]:
        out: list[int] = []
        for parent in self.parents:  # parents come before their children
            out.append(out[parent] + 1 if parent >= 0 else 0)
        return out

    def ancestry(self) -> Any:
        """Bool [n, n]: row i may attend to row j (j is i or an ancestor of i)."""
        import torch

        n = len(self.tokens)
        sees = torch.zeros((n, n), dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                sees[i] = sees[parent]
            sees[i, i] = True
        return sees


def keep_rows(cache: Any, base: int, rows: Sequence[int]) -> None:
    """Of the entries of ``cache`` after its first ``base``, keep ``rows`` (in order) right after them; drop the rest."""
    import torch

    index = torch.as_tensor([base + r for r in rows])
    with torch.inference_mode():  # a model's cache holds inference tensors: edited in place only in this mode
        for layer in cache.layers:
            for name in ("keys", "values"):
                tensor = getattr(layer, name)
                tensor[..., base : base + len(rows), :] = tensor.index_select(-2, index.to(tensor.device))
                setattr(layer, name, tensor[..., : base + len(rows), :])
