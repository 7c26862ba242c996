"""Backends for server tests: the FakeBackend made slow or blocking, to exercise queueing,
disconnects and graceful shutdown. Only the backend is fake; the server stays real."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from llm_recommender.backends.fake import FakeBackend


class SlowFakeBackend(FakeBackend):
    """Sleeps ``delay_s`` per scoring call, and records how many calls overlapped."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s
        self.gate = gate  # when set, scoring waits for it
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.scored = 0

    def next_token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[int]) -> np.ndarray:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        self.entered.set()
        try:
            if self.gate is not None:
                self.gate.wait(30)
            if self.delay_s:
                time.sleep(self.delay_s)
            return super().next_token_logprobs(prompts, token_ids)
        finally:
            with self._lock:
                self.active -= 1
                self.scored += 1
