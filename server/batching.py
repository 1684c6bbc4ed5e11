"""The cross-request micro-batcher every local model runs behind (NLI judge, embedder, baseline scorer).

Requests submit lists of items (pairs to score, texts to embed) and await their own
results. One collector task per model gathers the items of concurrent requests up to
`max_batch_size` items or until the oldest has waited `max_wait_ms`, shares each batch
fairly among the queued requests (a huge request cannot starve small ones), orders them by
length (less padding), runs one blocking model call at a time on the executor and
hands every request exactly its own rows back. Requests that expire or are cancelled
while queued lose their queued items, and their items in a batch still waiting for an executor
worker are left out of its model call; a failing model call fails only the requests
with items in that batch, with the model's own error — except running out of device
memory, which becomes DeviceOutOfMemoryError (RESOURCE_EXHAUSTED with a retry delay,
not INTERNAL) after the allocator's cached blocks are released. Disabled, a request's items
are never combined with another's and nothing waits (the ablation of the same path).

A model whose one call can run long (the causal LM: one item is a whole chain's n+1 sequences) is
built `stoppable`: its run function gets a `stop` callable, true once every request of the batch
has expired or been cancelled, checks it between forward passes and raises `Abandoned`, so a request
past its deadline frees the model after at most one pass instead of holding it to the end.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

from .pipeline.deadline import NO_DEADLINE, Deadline
from .pipeline.errors import BackendTimeoutError, DeviceOutOfMemoryError, is_out_of_memory
from .pipeline.runtime import Blocking

log = logging.getLogger("kgverify.batching")
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # one item's result
# (batcher name, items the model call scored, queue wait of each request first served by it in seconds): called once
# a model call has returned its results (a call that failed or was abandoned served nothing)
BatchObserver = Callable[[str, int, Sequence[float]], None]


class Abandoned(Exception):
    """Raised by a stoppable model call when `stop()` says no request is waiting for its results any more."""


def text_length(item: Any) -> int:
    """Sort key: characters of a text or of a tuple of texts (a proxy for tokens that needs no tokenizer)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, tuple):
        return sum(len(part) for part in item if isinstance(part, str))
    return 0


@dataclass(eq=False)
class _Request:
    items: Sequence[Any]
    deadline: Deadline
    future: asyncio.Future
    enqueued: float
    waited: float | None = None  # seconds its first items queued, until a served batch reports it
    results: list = field(default_factory=list)
    dispatched: int = 0  # items handed to a batch so far (the rest are queued)
    filled: int = 0  # results received
    counted: bool = False  # counted expired or abandoned already (the stats count each request once)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


@dataclass
class BatcherStats:
    """Counters of one batcher (also exported as Prometheus metrics when an observer is set)."""

    batches: int = 0  # batches taken from the queue
    items: int = 0  # items taken from the queue
    requests: int = 0
    largest_batch: int = 0  # most items of one model call that returned its results
    served_batches: int = 0  # model calls that returned their results (batches the model failed on do not count)
    served_items: int = 0  # items those calls scored (items of requests gone before their call are not scored)
    failed: int = 0  # model calls that raised (out of memory included)
    expired: int = 0
    abandoned: int = 0
    out_of_memory: int = 0  # batches whose model call ran out of device memory


def _gone(request: _Request) -> bool:
    """No one waits for the request's results any more (also read from the worker thread running its batch)."""
    return request.future.done() or request.deadline.expired()


class MicroBatcher(Generic[I, R]):
    """Runs `run(items) -> results` (blocking, one result per item, in order) for many concurrent requests."""

    def __init__(self, name: str, run: Callable[[list[I]], Sequence[R]], blocking: Blocking, *,
                 enabled: bool = True, max_batch_size: int = 64, max_wait_ms: float = 2.0,
                 length: Callable[[I], int] | None = text_length, on_batch: BatchObserver | None = None,
                 on_out_of_memory: Callable[[str], None] | None = None, stoppable: bool = False,
                 on_failure: Callable[[str], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if not 0 <= max_wait_ms < float("inf"):  # NaN fails too; infinite would never run a partial batch
            raise ValueError("max_wait_ms must be a finite number, not negative")
        self.name = name
        self.enabled = enabled
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.stats = BatcherStats()
        self.on_batch = on_batch
        self.on_out_of_memory = on_out_of_memory  # called with the batcher's name (metrics)
        self.on_failure = on_failure  # called with the batcher's name for each model call that raised (metrics)
        self._run = run
        self._stoppable = stoppable  # run(items, stop=...) checks stop() between passes (module docstring)
        self._blocking = blocking
        self._length = length
        self._queue: list[_Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._collector: asyncio.Task | None = None

    async def submit(self, items: Sequence[I], deadline: Deadline = NO_DEADLINE) -> list[R]:
        """The results of `items`, in order; BackendTimeoutError when the deadline passes first."""
        if not items:
            return []
        if deadline.expired():
            raise self._timeout()
        loop = asyncio.get_running_loop()
        request = _Request(list(items), deadline, loop.create_future(), time.monotonic())
        self.stats.requests += 1
        if self._loop is not loop:  # first use, or a new event loop (the queue of an old one is gone with it)
            self._loop, self._wake, self._collector, self._queue = loop, asyncio.Event(), None, []
        self._queue.append(request)
        self._wake.set()
        if self._collector is None or self._collector.done():
            # a context of its own: the collector serves every request, and its log lines carried the request id
            # of whichever request happened to start it
            self._collector = loop.create_task(self._collect(), name=f"batcher:{self.name}",
                                               context=contextvars.Context())
        try:
            # shield: a timeout or cancel of this request must not cancel the shared future's batch. asyncio.timeout,
            # not wait_for: on 3.11 wait_for swallows a cancel that lands once the batch has set the future (the
            # caller, a call its client left or a server stopping, would run on as if never cancelled)
            async with asyncio.timeout(deadline.remaining()):
                return await asyncio.shield(request.future)
        except TimeoutError as exc:
            if request.future.done() and not request.future.cancelled() and request.future.exception() is exc:
                raise  # the model's own error (a timeout of its device or library), not this request's deadline
            self._count(request, "expired")
            raise self._timeout() from exc
        finally:
            if not request.future.done():  # cancelled or expired: the collector drops its queued items
                request.future.cancel()

    def _count(self, request: _Request, counter: str) -> None:
        """Counts a request expired or abandoned, once (its caller and the collector may both see it gone)."""
        if not request.counted:
            request.counted = True
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _timeout(self) -> BackendTimeoutError:
        return BackendTimeoutError(f"the deadline expired while waiting for the {self.name} model")

    def _out_of_memory(self, exc: BaseException, items: int) -> DeviceOutOfMemoryError:
        log.warning("the %s model ran out of memory on a batch of %d items: %s", self.name, items, exc)
        self.stats.out_of_memory += 1
        if self.on_out_of_memory is not None:
            try:
                self.on_out_of_memory(self.name)
            except Exception:  # metrics never break scoring
                log.exception("out-of-memory observer failed")
        torch = sys.modules.get("torch")  # only when a model has loaded torch; never imported here
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            try:
                torch.cuda.empty_cache()  # the failed batch's cached blocks, so that a retry can fit
            except Exception:  # a broken CUDA context: the retry will say so
                log.exception("releasing the CUDA cache failed")
        return DeviceOutOfMemoryError(
            f"the {self.name} model ran out of device memory on a batch of {items} items; retry later, or lower "
            "KGV_BATCHING__MAX_BATCH_SIZE or the request's size", retry_after_s=1.0)

    def queued_items(self) -> int:
        return sum(len(r.items) - r.dispatched for r in self._queue if not r.future.done())

    async def _collect(self) -> None:
        try:
            while True:
                self._prune()
                if not self._queue:
                    return
                if self.enabled:
                    await self._fill()
                batch = self._take()
                if batch:
                    await self._execute(batch)
        except asyncio.CancelledError:
            for request in self._queue:
                request.future.cancel()
            raise

    async def _fill(self) -> None:
        """Waits until a full batch is queued or the oldest queued item has waited max_wait."""
        flush_at = self._queue[0].enqueued + self.max_wait_s
        while self.queued_items() < self.max_batch_size:
            left = flush_at - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                return

    def _prune(self) -> None:
        """Drops requests that were cancelled, expired or fully handed to batches from the queue."""
        kept = []
        for request in self._queue:
            if request.future.done():
                if request.future.cancelled():
                    self._count(request, "abandoned")
            elif request.deadline.expired():
                self._count(request, "expired")
                request.future.set_exception(self._timeout())
            elif request.dispatched < len(request.items):
                kept.append(request)
        self._queue = kept

    def _take(self) -> list[tuple[_Request, int]]:
        """(request, item index) of the next batch, shared fairly among the queued requests.

        Every queued request (oldest first) gets an equal share of the batch, the rest of it goes oldest first,
        and a request with items left goes behind the requests this batch did not serve: a request of
        thousands of items cannot hold the model while single-claim requests queue behind it (results do not
        depend on batch composition; tests/integration/test_batching_equivalence.py)."""
        batch: list[tuple[_Request, int]] = []
        now = time.monotonic()
        self._prune()
        queue = self._queue if self.enabled else self._queue[:1]
        if queue:
            share = max(1, self.max_batch_size // len(queue))
            takes = {id(r): 0 for r in queue}
            room = self.max_batch_size
            for fill in (share, self.max_batch_size):  # equal shares first, then what is left, oldest first
                for request in queue:
                    count = min(len(request.items) - request.dispatched - takes[id(request)], fill, room)
                    if count > 0:
                        takes[id(request)] += count
                        room -= count
            for request in queue:
                count = takes[id(request)]
                if not count:
                    continue
                if request.dispatched == 0:
                    request.waited = now - request.enqueued
                batch.extend((request, i) for i in range(request.dispatched, request.dispatched + count))
                request.dispatched += count
            served = [r for r in self._queue if takes.get(id(r))]
            self._queue = [r for r in self._queue if not takes.get(id(r))] + served
        if batch:
            self.stats.batches += 1
            self.stats.items += len(batch)
        return batch

    def _observe(self, observer: Callable | None, *args: Any) -> None:
        if observer is not None:
            try:
                observer(self.name, *args)
            except Exception:  # metrics never break scoring
                log.exception("batch observer failed")

    async def _execute(self, batch: list[tuple[_Request, int]]) -> None:
        items = [request.items[i] for request, i in batch]
        order = sorted(range(len(items)), key=lambda k: self._length(items[k])) if self._length else \
            list(range(len(items)))
        requests = list({id(r): r for r, _ in batch}.values())
        run = self._run
        if self._stoppable:
            run = functools.partial(run, stop=lambda: all(_gone(r) for r in requests))

        def call() -> tuple[list[int], Sequence[Any]]:
            # The call can wait for a worker behind other blocking work: items of requests cancelled or expired
            # meanwhile are not computed (results do not depend on the batch's other rows).
            live = [k for k in order if not _gone(batch[k][0])]
            if not live:
                raise Abandoned(f"no request waits for this {self.name} batch any more")
            try:
                return live, run([items[k] for k in live])
            except StopIteration as exc:  # an asyncio future refuses it: the batch would never finish, nor the batcher
                raise RuntimeError(f"the {self.name} model raised StopIteration") from exc

        try:
            live, out = await self._blocking.run(call)
            if len(out) != len(live):
                raise ValueError(f"the {self.name} model returned {len(out)} results for {len(live)} items")
        except Abandoned:
            log.info("the %s model stopped a batch of %d items: no request waits for it any more", self.name,
                     len(items))
            for request in requests:  # expired while the model ran: they get the timeout they already had
                if not request.future.done():
                    self._count(request, "expired")
                    request.future.set_exception(self._timeout())
            return
        except Exception as exc:
            self.stats.failed += 1
            self._observe(self.on_failure)
            if len(requests) > 1 and not is_out_of_memory(exc):
                # One request's item may be what the model cannot take: each request runs its items of this batch
                # alone, so only a request whose own items fail gets the error (results are batch-invariant).
                log.warning("the %s model failed on a batch shared by %d requests (%s: %s); running each "
                            "request's items alone", self.name, len(requests), type(exc).__name__, exc)
                for request in requests:
                    if not request.future.done():
                        await self._execute([(r, i) for r, i in batch if r is request])
                return
            if is_out_of_memory(exc):
                exc = self._out_of_memory(exc, len(items))
            for request in requests:  # the model's own error (or out of memory) for the requests in this batch
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        self.stats.served_batches += 1
        self.stats.served_items += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        waits = []
        for request in {id(batch[k][0]): batch[k][0] for k in live}.values():  # requests this call served first
            if request.waited is not None:
                waits.append(request.waited)
                request.waited = None
        self._observe(self.on_batch, len(live), waits)
        for position, k in enumerate(live):
            request, i = batch[k]
            request.results[i] = out[position]
            request.filled += 1
        for request in {id(r): r for r, _ in batch}.values():
            if request.filled == len(request.items) and not request.future.done():
                request.future.set_result(request.results)
