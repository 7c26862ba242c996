"""Usage in a response is that request's own: counted per call, never from counters other rankings share."""

from __future__ import annotations

import threading

import pytest

from llm_recommender import Recommender
from llm_recommender.backends.fake import FakeBackend


def _request(n_candidates: int, n_history: int, strategy: str, reasons: bool = False) -> dict:
    return {
        "history": [{"id": f"h{i}", "title": f"Seen film number {i}"} for i in range(n_history)],
        "candidates": [{"id": f"c{i}", "title": f"Candidate film {i}"} for i in range(n_candidates)],
        "strategy": strategy,
        "reasons": reasons,
        "top_k": 2,
    }


class Rendezvous:
    """Holds the first scoring call of each of two threads until both are inside the backend."""

    def __init__(self) -> None:
        self.active = False
        self.barrier = threading.Barrier(2, timeout=10)
        self.seen: set[int] = set()

    def __call__(self, prompt: str, token: str) -> float:
        me = threading.get_ident()
        if self.active and me not in self.seen:
            self.seen.add(me)
            self.barrier.wait()  # the other ranking has started and already counted a prompt
        return float(len(prompt) % 7)


@pytest.mark.parametrize("strategy", ["verbalizer", "pointwise", "listwise"])
def test_concurrent_rankings_each_get_their_own_usage(strategy):
    gate = Rendezvous()
    rec = Recommender(backend=FakeBackend(score_fn=gate))
    small, large = _request(2, 1, strategy), _request(6, 12, strategy, reasons=True)
    alone = [rec.rank_request(small).usage, rec.rank_request(large).usage]
    assert alone[0] != alone[1] and alone[0].prompt_tokens > 0

    gate.active = True
    got: list = [None, None]

    def run(i: int, req: dict) -> None:
        got[i] = rec.rank_request(req).usage

    threads = [threading.Thread(target=run, args=(i, r)) for i, r in enumerate((small, large))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(gate.seen) == 2  # both rankings really overlapped
    assert got == alone


def test_usage_of_a_batch_adds_up_to_what_the_backend_spent():
    backend = FakeBackend()
    rec = Recommender(backend=backend)
    before = backend.stats.snapshot()
    responses = rec.rank_many([_request(2, 1, "pointwise"), _request(5, 8, "pointwise", reasons=True)])
    spent = [a - b for a, b in zip(backend.stats.snapshot(), before)]
    total = [sum(getattr(r.usage, k) for r in responses) for k in ("prompt_tokens", "completion_tokens", "forward_passes")]
    assert total == spent
    assert responses[0].usage == rec.rank_request(_request(2, 1, "pointwise")).usage  # exact, not a share of the batch
