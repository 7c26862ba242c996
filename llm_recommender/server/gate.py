"""Bounded concurrency for inference.

The torch model is not safe to call from many threads at once, so rankings run on a
small dedicated thread pool (``max_concurrency`` threads, 1 by default) behind a
semaphore. At most ``max_queue`` requests wait for a slot; the next one is refused with
:class:`ServerBusyError` (429 + Retry-After) instead of piling up. A request whose client
disconnects while it waits is dropped before it runs; a ranking already running on the
thread cannot be interrupted safely and finishes, its answer discarded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import ClientDisconnectedError, ServerBusyError

T = TypeVar("T")


class InferenceGate:
    def __init__(self, max_concurrency: int = 1, max_queue: int = 64, min_retry_after_s: int = 1,
                 on_change: Callable[[InferenceGate], None] | None = None) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.min_retry_after_s = min_retry_after_s
        self.waiting = 0
        self.running = 0
        self.cancelled = 0  # dropped while queued because the client went away
        self._sem = asyncio.Semaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="llm-rec-infer")
        self._avg_s = 0.0  # moving average of one ranking, for Retry-After
        self._on_change = on_change or (lambda gate: None)

    def retry_after(self) -> int:
        backlog = (self.waiting + self.running) / self.max_concurrency
        return max(self.min_retry_after_s, math.ceil(backlog * self._avg_s))

    async def run(self, fn: Callable[..., T], *args: Any,
                  disconnected: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run ``fn(*args)`` on the inference thread once a slot is free."""
        if self.waiting >= self.max_queue and self._sem.locked():
            raise ServerBusyError(
                f"server busy: {self.running} running and {self.waiting} queued (max_queue={self.max_queue}); retry later",
                retry_after=self.retry_after(),
            )
        await self._acquire(disconnected)
        self.running += 1
        self._on_change(self)
        start = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            took = time.perf_counter() - start
            self._avg_s = took if self._avg_s == 0 else 0.8 * self._avg_s + 0.2 * took
            self.running -= 1
            self._sem.release()
            self._on_change(self)

    async def _acquire(self, disconnected: Callable[[], Awaitable[None]] | None) -> None:
        if not self._sem.locked() or disconnected is None:
            self.waiting += 1
            self._on_change(self)
            try:
                await self._sem.acquire()
            finally:
                self.waiting -= 1
                self._on_change(self)
            return
        self.waiting += 1
        self._on_change(self)
        acquire = asyncio.ensure_future(self._sem.acquire())
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({acquire, watch}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            acquire.cancel()
            raise
        finally:
            self.waiting -= 1
            watch.cancel()
            self._on_change(self)
        if acquire.done() and not acquire.cancelled():
            return  # got the slot (even if the client left at the same moment: the caller checks)
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            pass
        else:  # acquired just before the cancel landed: give the slot back
            self._sem.release()
        self.cancelled += 1
        raise ClientDisconnectedError("client disconnected while the request was queued")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
