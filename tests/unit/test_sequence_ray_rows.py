"""The sequence model's Ray Train workers split each of an epoch's seeded batches between them: together they take
every window of the epoch once (the single-process batches, same order), and every worker takes every step."""

from __future__ import annotations

import numpy as np
import pytest

from llm_recommender.scorers.learned._ray_training import rank_rows
from llm_recommender.scorers.learned._training import batches


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("bucket", [False, True])
def test_the_workers_cover_each_epoch_once_in_the_single_process_batches(world, bucket):
    lengths = np.random.default_rng(1).integers(1, 50, 1001)
    epoch = batches(lengths, 128, np.random.default_rng([0, 3]), bucket=bucket)  # what one process trains on
    seen = []
    for idx in epoch:
        parts = [rank_rows(idx, r, world) for r in range(world)]
        assert all(len(p) for p in parts)  # no worker sits out a step (DDP needs every worker in every step)
        assert sorted(np.concatenate(parts).tolist()) == sorted(idx.tolist())  # each batch split, nothing lost or doubled
        seen += np.concatenate(parts).tolist()
    assert sorted(seen) == list(range(1001))


def test_a_batch_smaller_than_the_group_lends_a_row_to_each_worker_without_one():
    idx = np.array([7, 9])
    assert [rank_rows(idx, r, 4).tolist() for r in range(4)] == [[7], [9], [7], [9]]
