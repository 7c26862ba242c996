"""Bounded concurrency and micro-batching for inference.

The torch model is not safe to call from many threads at once, so rankings run on a
small dedicated thread pool (``max_concurrency`` threads, 1 by default), one batch per
thread. Requests wait in one FIFO queue; when a thread is free, the requests queued for
the same batch function are gathered (up to ``max_batch``, waiting at most
``batch_wait_ms`` for more) and run as one call, so 16 waiting users cost one
``rank_many`` instead of 16 rankings. Each request still gets its own answer or error.

At most ``max_queue`` requests wait; the next one is refused with
:class:`ServerBusyError` (429 + Retry-After) instead of piling up. A request whose client
disconnects while it waits is dropped before it runs, without touching the others; a
batch already running on the thread cannot be interrupted safely and finishes, the
departed request's answer discarded.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ClientDisconnectedError, ServerBusyError

T = TypeVar("T")
# A batch function takes the gathered items and returns one result per item, in order;
# a result that is an exception is raised to that item's caller only.
BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(eq=False)
class _Waiting:
    batch_fn: BatchFn | None  # None: ``call`` runs alone
    item: Any = None
    call: Callable[[], Any] | None = None
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # an abandoned request's error is not "never retrieved"


class InferenceGate:
    def __init__(self, max_concurrency: int = 1, max_queue: int = 64, min_retry_after_s: int = 1,
                 on_change: Callable[[InferenceGate], None] | None = None,
                 max_batch: int = 1, batch_wait_ms: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.min_retry_after_s = min_retry_after_s
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.waiting = 0
        self.running = 0  # requests in batches now running
        self.cancelled = 0  # dropped while queued because the client went away
        self.batches = 0
        self._sem = asyncio.Semaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="llm-rec-infer")
        self._avg_s = 0.0  # moving average of one batch, for Retry-After
        self._on_change = on_change or (lambda gate: None)
        self._on_batch = on_batch or (lambda size: None)
        self._queue: deque[_Waiting] = deque()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._executing: set[asyncio.Task[None]] = set()

    def retry_after(self) -> int:
        batches = math.ceil(self.waiting / self.max_batch) + math.ceil(self.running / self.max_batch)
        return max(self.min_retry_after_s, math.ceil(batches / self.max_concurrency * self._avg_s))

    async def run(self, fn: Callable[..., T], *args: Any,
                  disconnected: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run ``fn(*args)`` alone on the inference thread once a slot is free."""
        return await self._wait(_Waiting(None, call=functools.partial(fn, *args)), disconnected)

    async def run_batched(self, batch_fn: BatchFn, item: Any,
                          disconnected: Callable[[], Awaitable[None]] | None = None) -> Any:
        """Run ``batch_fn([..., item, ...])`` together with other items queued for the same ``batch_fn``."""
        return await self._wait(_Waiting(batch_fn, item=item), disconnected)

    # ---- the caller's side --------------------------------------------------------------
    async def _wait(self, entry: _Waiting, disconnected: Callable[[], Awaitable[None]] | None) -> Any:
        if self.waiting >= self.max_queue and self._sem.locked():
            raise ServerBusyError(
                f"server busy: {self.running} running and {self.waiting} queued (max_queue={self.max_queue}); retry later",
                retry_after=self.retry_after(),
            )
        self._queue.append(entry)
        self.waiting += 1
        self._changed()
        self._wake()
        watch = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            await asyncio.wait({entry.future} | ({watch} if watch else set()), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(entry)
            raise
        finally:
            if watch is not None:
                watch.cancel()
        if not entry.future.done():  # the client went away first
            if self._withdraw(entry):
                self.cancelled += 1
                raise ClientDisconnectedError("client disconnected while the request was queued")
            return await entry.future  # already running: finishes; the caller sees the client is gone
        return entry.future.result()

    def _withdraw(self, entry: _Waiting) -> bool:
        """Take a request out of the queue; False when a batch already holds it."""
        try:
            self._queue.remove(entry)
        except ValueError:
            return False
        self.waiting -= 1
        self._changed()
        return True

    def _abandon(self, entry: _Waiting) -> None:
        if not self._withdraw(entry):
            entry.future.add_done_callback(_consume)

    # ---- the dispatcher's side ----------------------------------------------------------
    def _wake(self) -> None:
        self._arrived.set()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())

    async def _dispatch(self) -> None:
        # Runs while anything is queued; _wake starts it again on the next arrival.
        while self._queue:
            await self._sem.acquire()
            batch = await self._gather()
            if not batch:
                self._sem.release()
                continue
            task = asyncio.ensure_future(self._execute(batch))
            self._executing.add(task)
            task.add_done_callback(self._executing.discard)

    async def _gather(self) -> list[_Waiting]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait_s
        while self._queue:
            head = self._queue[0]
            if head.batch_fn is None or self.max_batch == 1:
                batch = [head]
                break
            batch = [e for e in self._queue if e.batch_fn == head.batch_fn][: self.max_batch]
            left = deadline - loop.time()
            if len(batch) >= self.max_batch or left <= 0:
                break
            self._arrived.clear()  # wait for more arrivals (or withdrawals) until the deadline
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        else:
            return []
        for e in batch:
            self._queue.remove(e)
        self.waiting -= len(batch)
        self.running += len(batch)
        self._changed()
        return batch

    async def _execute(self, batch: list[_Waiting]) -> None:
        start = time.perf_counter()
        head = batch[0]
        try:
            if head.batch_fn is None:
                results: Sequence[Any] = [await asyncio.get_running_loop().run_in_executor(self._pool, _capture, head.call)]  # pyright: ignore[reportArgumentType]  (set without batch_fn)
            else:
                results = await asyncio.get_running_loop().run_in_executor(
                    self._pool, head.batch_fn, [e.item for e in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: each caller sees it
            results = [exc] * len(batch)
        finally:
            took = time.perf_counter() - start
            self._avg_s = took if self._avg_s == 0 else 0.8 * self._avg_s + 0.2 * took
            self.running -= len(batch)
            self.batches += 1
            self._sem.release()
            self._changed()
            self._on_batch(len(batch))
        for e, res in zip(batch, results):
            if e.future.done():
                continue
            if isinstance(res, BaseException):
                e.future.set_exception(res)
            else:
                e.future.set_result(res)

    def _changed(self) -> None:
        self._on_change(self)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _capture(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - handed to the caller's future
        return exc
