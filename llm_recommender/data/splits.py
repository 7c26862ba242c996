"""Seeded, deterministic evaluation protocols over a :class:`~llm_recommender.data.RecDataset`.

- **Leave-one-out by time** (:func:`leave_one_out`): per user, in chronological order
  ``(timestamp, file row)``, test target = last interaction, validation target = the one
  before it; a target's history is at most ``history_len`` (50) interactions strictly
  before it in that order. The test history therefore contains the validation target, as in
  RecBole's ``LS: valid_and_test`` split that LLMRank uses.
- **LLMRank candidate ranking** (:func:`llmrank_cases`): ``n_users`` users sampled with the
  seed; candidates = the ground truth + ``n_candidates - 1`` distinct negatives drawn
  uniformly from the whole catalogue except the ground truth, then shuffled. This is the
  published protocol (RUCAIBox/LLMRank ``sample_candidates.py -s random`` + ``trainer.py``
  with ``recall_budget=20, has_gt=True, fix_pos=-1``): negatives may include items from the
  user's history there, so ``exclude_history=False`` is the default; random ordering gives
  NDCG@10 = 0.227 in expectation (:func:`~llm_recommender.metrics.expected_random`).
- **Pointwise like/dislike** (:func:`pointwise_cases`): the split target alone as the one
  candidate, label = rating > 3; for AUC, log loss, Brier and calibration.

Randomness: users are sampled with ``random.Random(seed)``; each case's candidates use a
generator seeded from ``(protocol, seed, split, user)``, so a user's candidates do not
depend on which other users were sampled.

Leakage: a case carries only interactions strictly before its target
(:meth:`UserSplit.history`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import InvalidRequestError
from ..protocol import RankRequest
from .base import Interaction, RecDataset

Split = Literal["valid", "test"]
SPLITS: tuple[Split, ...] = ("valid", "test")
DEFAULT_HISTORY = 50
LIKE_THRESHOLD = 3.0


@dataclass(frozen=True)
class UserSplit:
    """One user's chronological sequence and its leave-one-out targets."""

    user_id: str
    sequence: tuple[Interaction, ...]

    def target_index(self, split: Split) -> int:
        if split == "test":
            return len(self.sequence) - 1
        if split == "valid":
            return len(self.sequence) - 2
        raise InvalidRequestError(f"split must be 'valid' or 'test', got {split!r}", param="split")

    def target(self, split: Split) -> Interaction:
        return self.sequence[self.target_index(split)]

    def history(self, split: Split, max_len: int | None = DEFAULT_HISTORY) -> list[Interaction]:
        """The (at most ``max_len``) interactions strictly before the split's target, oldest first."""
        t = self.target_index(split)
        start = 0 if max_len is None else max(0, t - max_len)
        return list(self.sequence[start:t])

    def before(self, split: Split) -> list[Interaction]:
        """All of the user's interactions strictly before the split's target."""
        return self.history(split, max_len=None)


def leave_one_out(dataset: RecDataset, *, min_history: int = 1) -> dict[str, UserSplit]:
    """Per-user leave-one-out splits; users need ``2 + min_history`` interactions (others are left out)."""
    need = 2 + min_history
    return {u: UserSplit(u, tuple(seq)) for u, seq in dataset.sequences.items() if len(seq) >= need}


def training_interactions(splits: dict[str, UserSplit], split: Split = "test") -> list[tuple[str, Interaction]]:
    """The leave-one-out training data for fitting models evaluated on ``split``:
    every user's interactions before their own ``split`` target (``valid``: all but the last
    two; ``test``: all but the last), as ``(user_id, interaction)`` pairs. No user's target
    for ``split`` is included (other users' earlier-in-sequence items may be later in time)."""
    return [(uid, x) for uid, user in splits.items() for x in user.before(split)]


@dataclass(frozen=True)
class EvalCase:
    """One evaluation case: a request for any ``Scorer`` plus the ground truth to score it.

    ``labels`` has one 0/1 entry per candidate: for ranking protocols 1 marks the ground
    truth; for the pointwise protocol the single candidate's label is ``rating > 3``.
    """

    user_id: str
    split: Split
    protocol: str
    target_item_id: str
    target_timestamp: int  # unix seconds, or the position in the user's sequence (time_kind "order")
    target_position: int  # index of the target in the user's chronological sequence
    request: RankRequest
    ground_truth_index: int
    labels: tuple[int, ...]
    target_rating: float | None = None

    @property
    def candidate_ids(self) -> list[str]:
        return [c.id for c in self.request.candidates]

    @property
    def history_ids(self) -> list[str]:
        return [h.id for h in self.request.history]

    def with_candidate_order(self, order: Sequence[int]) -> EvalCase:
        """The same case with candidates permuted: new candidate ``j`` is old ``order[j]``."""
        if sorted(order) != list(range(len(self.request.candidates))):
            raise InvalidRequestError("order must be a permutation of the candidate indices", param="order")
        cands = [self.request.candidates[i] for i in order]
        request = self.request.model_copy(update={"candidates": cands})
        return replace(
            self,
            request=request,
            ground_truth_index=list(order).index(self.ground_truth_index),
            labels=tuple(self.labels[i] for i in order),
        )


def sample_users(splits: dict[str, UserSplit], n_users: int | None, seed: int) -> list[str]:
    """``n_users`` user ids sampled without replacement with ``random.Random(seed)`` (all when None)."""
    eligible = list(splits)  # dataset order: first appearance in the interactions file
    if n_users is None:
        return eligible
    if n_users < 1 or n_users > len(eligible):
        raise InvalidRequestError(
            f"n_users must be between 1 and the {len(eligible)} eligible users, got {n_users}", param="users"
        )
    return random.Random(seed).sample(eligible, n_users)


def make_case(
    dataset: RecDataset,
    user: UserSplit,
    split: Split,
    candidate_ids: Sequence[str],
    *,
    protocol: str,
    history_len: int | None = DEFAULT_HISTORY,
    labels: Sequence[int] | None = None,
) -> EvalCase:
    """Build a case for ``user``'s ``split`` target with explicit candidates (must include the target)."""
    target = user.target(split)
    if target.item_id not in candidate_ids:
        raise InvalidRequestError(f"the target {target.item_id!r} must be among the candidates", param="candidates")
    gt = list(candidate_ids).index(target.item_id)
    request = RankRequest(
        history=dataset.history_entries(user.history(split, history_len)),
        candidates=[dataset.item(i) for i in candidate_ids],
        top_k=len(candidate_ids),
    )
    if labels is None:
        labels = [int(j == gt) for j in range(len(candidate_ids))]
    return EvalCase(
        user_id=user.user_id,
        split=split,
        protocol=protocol,
        target_item_id=target.item_id,
        target_timestamp=target.timestamp,
        target_position=user.target_index(split),
        request=request,
        ground_truth_index=gt,
        labels=tuple(int(x) for x in labels),
        target_rating=target.rating,
    )


def _case_rng(protocol: str, seed: int, split: str, user_id: str) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`: stable across runs and platforms.
    return random.Random(f"{protocol}:{seed}:{split}:{user_id}")


def llmrank_cases(
    dataset: RecDataset,
    *,
    split: Split = "test",
    n_users: int | None = 200,
    n_candidates: int = 20,
    seed: int = 0,
    history_len: int | None = DEFAULT_HISTORY,
    exclude_history: bool = False,
    users: Iterable[str] | None = None,
    splits: dict[str, UserSplit] | None = None,
) -> list[EvalCase]:
    """LLMRank candidate-ranking cases (see the module docstring), in sampled-user order.

    ``exclude_history=True`` also keeps every item the user interacted with before the
    target out of the negatives (not the published protocol). The same ``seed`` gives the
    same users for ``valid`` and ``test``, so calibrators fitted on one apply to the other.
    """
    if n_candidates < 2:
        raise InvalidRequestError("n_candidates must be at least 2", param="candidates")
    splits = splits if splits is not None else leave_one_out(dataset)
    chosen = _chosen_users(splits, users, n_users, seed)
    catalogue = dataset.item_ids
    catalogue_set = set(catalogue)
    cases = []
    for uid in chosen:
        user = splits[uid]
        target = user.target(split).item_id
        banned = {target} | ({x.item_id for x in user.before(split)} if exclude_history else set())
        banned &= catalogue_set
        k = n_candidates - 1
        if len(catalogue) - len(banned) < k:
            raise InvalidRequestError(
                f"user {uid!r}: only {len(catalogue) - len(banned)} possible negatives for {k}", param="candidates"
            )
        rng = _case_rng("llmrank", seed, split, uid)
        # As LLMRank does: draw distinct items from the whole catalogue, drop the banned ones,
        # keep the first k -- a uniform k-subset of the allowed items, in random order.
        drawn = rng.sample(catalogue, min(len(catalogue), k + len(banned)))
        cands = [i for i in drawn if i not in banned][:k] + [target]
        rng.shuffle(cands)
        cases.append(make_case(dataset, user, split, cands, protocol="llmrank", history_len=history_len))
    return cases


def pointwise_cases(
    dataset: RecDataset,
    *,
    split: Split = "test",
    n_users: int | None = 200,
    seed: int = 0,
    history_len: int | None = DEFAULT_HISTORY,
    threshold: float = LIKE_THRESHOLD,
    users: Iterable[str] | None = None,
    splits: dict[str, UserSplit] | None = None,
) -> list[EvalCase]:
    """Like/dislike cases: the split target is the only candidate, label = ``rating > threshold``.

    Users whose target has no rating are not eligible (a dataset without ratings is an error).
    """
    if not dataset.has_ratings:
        raise InvalidRequestError(
            f"dataset {dataset.name!r} has no ratings: the pointwise protocol needs them", param="protocol"
        )
    splits = splits if splits is not None else leave_one_out(dataset)
    rated = {u: s for u, s in splits.items() if s.target(split).rating is not None}
    chosen = _chosen_users(rated, users, n_users, seed)
    cases = []
    for uid in chosen:
        user = rated[uid]
        target = user.target(split)
        label = int(float(target.rating) > threshold)  # pyright: ignore[reportArgumentType]  (rated users only)
        cases.append(
            make_case(
                dataset, user, split, [target.item_id], protocol="pointwise", history_len=history_len, labels=[label]
            )
        )
    return cases


def _chosen_users(
    splits: dict[str, UserSplit], users: Iterable[str] | None, n_users: int | None, seed: int
) -> list[str]:
    if users is None:
        return sample_users(splits, n_users, seed)
    chosen = [str(u) for u in users]
    unknown = [u for u in chosen if u not in splits]
    if unknown:
        raise InvalidRequestError(
            f"user(s) {', '.join(map(repr, unknown[:5]))} not eligible (unknown, or too few interactions)",
            param="users",
        )
    return chosen


def position_variants(case: EvalCase) -> list[EvalCase]:
    """The case with the ground truth moved to each position 0..n-1 (other candidates keep their order)."""
    n = len(case.request.candidates)
    others = [i for i in range(n) if i != case.ground_truth_index]
    return [case.with_candidate_order(others[:p] + [case.ground_truth_index] + others[p:]) for p in range(n)]


# ---- cold start ------------------------------------------------------------------------
# A seeded share of the catalogue is treated as new: removed from training entirely, and the
# cases rank among those items only, so models that learn from interactions (CF, popularity,
# co-occurrence) know none of the candidates and text is all there is.
#
# Rule: a user is eligible with at least two interactions with cold items and at least one
# interaction before the earlier of the two. In the user's chronological sequence the
# test target is their LAST interaction with a cold item, the validation target the cold
# interaction before it; so the same users serve both splits. History = the (at most
# ``history_len``) interactions strictly before the target in that order; it may contain
# cold items (the user really consumed them; a model just cannot have trained on them).
# Candidates = the target + ``n_candidates - 1`` distinct other cold items drawn uniformly
# (history items allowed, as in LLMRank), shuffled with a per-case generator.


def cold_start_items(dataset: RecDataset, share: float = 0.1, seed: int = 0) -> frozenset[str]:
    """``round(share * n)`` of the ``n`` items that have interactions, sampled with the seed."""
    if not 0.0 < share < 1.0:
        raise InvalidRequestError(f"share must be strictly between 0 and 1, got {share}", param="share")
    with_interactions = sorted(set(dataset.column("interactions", "item_id")))
    k = max(1, round(share * len(with_interactions)))
    return frozenset(random.Random(f"cold_start:{seed}").sample(with_interactions, k))


def _cold_positions(user: UserSplit, cold: frozenset[str]) -> list[int]:
    return [j for j, x in enumerate(user.sequence) if x.item_id in cold]


def cold_start_target_index(user: UserSplit, cold: frozenset[str], split: Split) -> int | None:
    """Position of the user's cold-start target for ``split`` (None when the user is not eligible)."""
    if split not in SPLITS:
        raise InvalidRequestError(f"split must be 'valid' or 'test', got {split!r}", param="split")
    positions = _cold_positions(user, cold)
    if len(positions) < 2 or positions[-2] < 1:
        return None
    return positions[-1] if split == "test" else positions[-2]


def cold_start_cases(
    dataset: RecDataset,
    *,
    split: Split = "test",
    n_users: int | None = 200,
    n_candidates: int = 20,
    seed: int = 0,
    share: float = 0.1,
    history_len: int | None = DEFAULT_HISTORY,
    splits: dict[str, UserSplit] | None = None,
    cold: frozenset[str] | None = None,
) -> list[EvalCase]:
    """Cold-start ranking cases (rule above), in sampled-user order; ``cold`` defaults to
    :func:`cold_start_items` ``(dataset, share, seed)``."""
    if n_candidates < 2:
        raise InvalidRequestError("n_candidates must be at least 2", param="candidates")
    cold = cold if cold is not None else cold_start_items(dataset, share, seed)
    if len(cold) < n_candidates:
        raise InvalidRequestError(
            f"only {len(cold)} cold items for {n_candidates} candidates: raise share or lower n_candidates",
            param="candidates",
        )
    splits = splits if splits is not None else leave_one_out(dataset)
    targets = {uid: cold_start_target_index(s, cold, split) for uid, s in splits.items()}
    eligible = {uid: splits[uid] for uid, t in targets.items() if t is not None}
    pool = sorted(cold)
    cases = []
    for uid in sample_users(eligible, n_users, seed):
        user, t = eligible[uid], targets[uid]
        assert t is not None
        target = user.sequence[t]
        rng = _case_rng("cold_start", seed, split, uid)
        drawn = rng.sample(pool, n_candidates)  # one extra in case it holds the target
        cands = [i for i in drawn if i != target.item_id][: n_candidates - 1] + [target.item_id]
        rng.shuffle(cands)
        start = 0 if history_len is None else max(0, t - history_len)
        request = RankRequest(
            history=dataset.history_entries(list(user.sequence[start:t])),
            candidates=[dataset.item(i) for i in cands],
            top_k=len(cands),
        )
        gt = cands.index(target.item_id)
        cases.append(
            EvalCase(
                user_id=uid,
                split=split,
                protocol="cold_start",
                target_item_id=target.item_id,
                target_timestamp=target.timestamp,
                target_position=t,
                request=request,
                ground_truth_index=gt,
                labels=tuple(int(j == gt) for j in range(len(cands))),
                target_rating=target.rating,
            )
        )
    return cases


def cold_start_training(
    splits: dict[str, UserSplit], cold: frozenset[str] | set[str], split: Split = "valid"
) -> list[tuple[str, Interaction]]:
    """:func:`training_interactions` for ``split`` with every interaction with a cold item removed."""
    return [(uid, x) for uid, x in training_interactions(splits, split) if x.item_id not in cold]
