"""The backend kit: padded batches and the dtype policy shared by backends, tuning and the encoder."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llm_recommender.backends import kit  # noqa: E402


def test_left_padding_ends_every_row_at_the_last_column():
    ids, mask = kit.padded_batch([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    assert kit.mask_positions(mask).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


def test_right_padding_with_a_cached_prefix():
    ids, mask = kit.padded_batch([[5, 6], [7]], pad_id=9, side="right", prefix=3)
    assert ids.tolist() == [[5, 6], [7, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_auto_dtype(monkeypatch):
    monkeypatch.setattr(kit, "cpu_supports_bf16_fast", lambda: False)
    assert kit.auto_dtype(cuda=False) == "float32"
    monkeypatch.setattr(kit, "cpu_supports_bf16_fast", lambda: True)
    assert kit.auto_dtype(cuda=False) == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert kit.auto_dtype(cuda=True) == "float16"
