"""The CPU attention kernels against torch's SDPA with an explicit mask (fp32, so exact)."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from llm_recommender.backends import cpu_attention  # noqa: E402


def _qkv(heads, kv_heads, q_len, kv_len, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, q_len, dim, generator=g), torch.randn(1, kv_heads, kv_len, dim, generator=g),
            torch.randn(1, kv_heads, kv_len, dim, generator=g))


def _reference(q, k, v, mask):
    rep = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask)
    return out.transpose(1, 2)


@pytest.mark.parametrize("length", [1, 7, 128, 300])
def test_blocked_causal_attention_equals_sdpa(length):
    q, k, v = _qkv(6, 2, length, length)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    got = cpu_attention.blocked_causal_attention(q, k, v, scale=q.shape[-1] ** -0.5, block=64)
    torch.testing.assert_close(got, _reference(q, k, v, causal), atol=1e-5, rtol=1e-5)


def test_packed_suffix_attention_equals_the_masked_pass():
    prefix, lengths = 50, [3, 9, 1, 5]
    total = sum(lengths)
    q, k, v = _qkv(6, 3, total, prefix + total, seed=1)
    mask = torch.zeros(total, prefix + total, dtype=torch.bool)
    mask[:, :prefix] = True
    start = 0
    for n in lengths:
        mask[start : start + n, prefix + start : prefix + start + n] = torch.ones(n, n, dtype=torch.bool).tril()
        start += n
    got = cpu_attention.packed_suffix_attention(q, k, v, q.shape[-1] ** -0.5, prefix, lengths)
    torch.testing.assert_close(got, _reference(q, k, v, mask), atol=1e-5, rtol=1e-5)


def test_the_registered_attention_falls_back_where_the_kernels_do_not_apply():
    """A padded batch (explicit mask) and a decoding step go to transformers' SDPA, unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.is_causal = True
    module.num_key_value_groups = 2
    q, k, v = _qkv(4, 2, 1, 9)  # one decoding step over 9 cached positions
    want, _ = sdpa_attention_forward(module, q, k, v, None)
    got, _ = cpu_attention.attention_forward(module, q, k, v, None)
    torch.testing.assert_close(got, want)
    q, k, v = _qkv(4, 2, 5, 5)
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    mask[..., 0] = False  # a left pad
    mask[0, 0, 0, 0] = True
    want, _ = sdpa_attention_forward(module, q, k, v, mask)
    got, _ = cpu_attention.attention_forward(module, q, k, v, mask)
    torch.testing.assert_close(got, want)


def test_shared_prefix_groups_keep_order_and_leave_every_row_a_suffix():
    from llm_recommender.backends.transformers_backend import _shared_prefix_groups

    a = list(range(100)) + [1, 2]
    b = list(range(100)) + [3]
    c = list(range(70)) + [9, 9]
    d = [5] * 80
    groups = _shared_prefix_groups([a, b, c, a[:], d], min_shared=64)
    assert [(n, len(g)) for n, g in groups] == [(70, 4), (80, 1)]
    assert [row for _, g in groups for row in g] == [a, b, c, a, d]  # order kept
    same = _shared_prefix_groups([b[:], b[:]], min_shared=64)
    assert same == [(len(b) - 1, [b, b])]  # identical prompts: one token left to score


def test_choose_follows_the_setting_and_the_cpu(monkeypatch):
    from llm_recommender.backends import kit

    monkeypatch.setattr(kit, "cpu_has_amx", lambda: True)
    assert cpu_attention.choose("auto")[0] == "sdpa"
    assert cpu_attention.choose("blocked")[0] == cpu_attention.NAME
    monkeypatch.setattr(kit, "cpu_has_amx", lambda: False)
    assert cpu_attention.choose("auto")[0] == cpu_attention.NAME
    assert cpu_attention.choose("sdpa")[0] == "sdpa"


def _on_cache_case(cached, visible, sees, seed=2):
    """q/k/v of len(sees) new tokens on a cache of ``cached`` positions, and the exact mask."""
    t = len(sees)
    q, k, v = _qkv(6, 2, t, cached + t, seed=seed)
    mask = torch.zeros(t, cached + t, dtype=torch.bool)
    mask[:, :visible] = True
    mask[:, cached:] = sees
    return q, k, v, mask


def _tree_sees(items):
    """The key tree's own ancestry mask (``key_tree.py``) of ``items``, each closed by one token."""
    from llm_recommender.backends.key_tree import KeyTree

    return KeyTree.build(items, [0]).ancestry()


def test_the_registered_attention_runs_declared_layouts_exactly():
    """Under ``on_cache`` the registered attention gives the masked pass's output: packed suffixes
    (the blocked kernel's) and a tree on all or part of a cache (SDPA with the mask)."""
    module = torch.nn.Module()
    module.is_causal = True
    module.num_key_value_groups = 3
    forward = cpu_attention.attention_forward
    lengths = [3, 1, 4]
    packed = torch.block_diag(*(torch.ones(n, n, dtype=torch.bool).tril() for n in lengths))
    tree = _tree_sees([[1, 2], [1], [3]])
    for sees, cached, visible, lens in [(packed, 30, 30, lengths), (tree, 30, 18, None), (tree, 30, 30, None)]:
        q, k, v, mask = _on_cache_case(cached, visible, sees)
        with cpu_attention.on_cache(visible, sees, lens):
            got, _ = forward(module, q, k, v, mask[None, None])
        torch.testing.assert_close(got, _reference(q, k, v, mask), atol=1e-5, rtol=1e-5)
