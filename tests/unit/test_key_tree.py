"""The token tree that scores every open key of a ranking slot in one pass (no model here)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from llm_recommender.backends.key_tree import KeyTree, keep_rows

SEP0, SEP1, CLOSE = 90, 91, 99


def test_keys_share_their_common_prefixes_and_each_ends_in_its_own_tail():
    # keys "1", "12", "123", "7" as tokens; each followed by the separator (90, 91)
    tree = KeyTree.build([(1,), (1, 2), (1, 2, 3), (7,)], [SEP0, SEP1])
    # rows: 0 "1" | 1-2 sep(1) | 3 "2" | 4-5 sep(12) | 6 "3" | 7-8 sep(123) | 9 "7" | 10-11 sep(7)
    assert tree.tokens == [1, SEP0, SEP1, 2, SEP0, SEP1, 3, SEP0, SEP1, 7, SEP0, SEP1]
    assert tree.parents == [-1, 0, 1, 0, 3, 4, 3, 6, 7, -1, 9, 10]
    assert tree.paths == [[0, 1, 2], [0, 3, 4, 5], [0, 3, 6, 7, 8], [9, 10, 11]]
    assert tree.depths() == [0, 1, 2, 1, 2, 3, 2, 3, 4, 0, 1, 2]


def test_each_node_sees_itself_and_its_ancestors_only():
    tree = KeyTree.build([(1, 2), (1, 3), (4,)], [CLOSE])
    assert tree.tokens == [1, 2, CLOSE, 3, CLOSE, 4, CLOSE]
    sees = tree.ancestry()
    for i in range(len(tree.tokens)):
        expected, node = set(), i
        while node >= 0:
            expected.add(node)
            node = tree.parents[node]
        assert {j for j in range(len(tree.tokens)) if sees[i, j]} == expected


def test_keep_rows_leaves_the_cache_then_the_chosen_rows_in_order():
    cached, appended = 3, 5
    layers = []
    for _ in range(2):
        keys = torch.arange(cached + appended, dtype=torch.float32).view(1, 1, -1, 1).repeat(1, 2, 1, 4)
        layers.append(SimpleNamespace(keys=keys, values=keys * 10))
    keep_rows(SimpleNamespace(layers=layers), cached, [0, 2, 4])
    for layer in layers:
        assert layer.keys.shape == (1, 2, 6, 4)
        assert layer.keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 5, 7]
        assert layer.values[0, 1, :, 0].tolist() == [0, 10, 20, 30, 50, 70]
