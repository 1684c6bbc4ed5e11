"""Server runtime: the micro-batcher's counters, a server's wait_ready under cancellation, and every request of a
batcher ending when its executor is shut down."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.app import VerifierServer
from server.batching import MicroBatcher
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError
from server.pipeline.runtime import Blocking

EXECUTOR = ThreadPoolExecutor(2, thread_name_prefix="test-review4")
HANG_GUARD_S = 30  # only catches a hang; nothing here depends on timing


async def test_a_request_that_expires_while_its_batch_runs_is_counted_once():
    """A request whose deadline passed while its batch held the model was counted both expired (by its caller) and
    abandoned (by the collector dropping its cancelled future)."""
    gate = threading.Event()

    def held(items):
        gate.wait(HANG_GUARD_S)
        return items

    b = MicroBatcher("slow-model", held, Blocking(EXECUTOR), max_wait_ms=0)
    async with asyncio.timeout(HANG_GUARD_S):
        try:
            with pytest.raises(BackendTimeoutError):
                await b.submit(["a"], Deadline.after(0.05))
        finally:
            gate.set()
        assert await b.submit(["b"]) == ["b"]  # the collector has pruned the expired request by now
    assert (b.stats.expired, b.stats.abandoned) == (1, 0)


async def test_a_request_cancelled_by_its_caller_is_counted_abandoned_once():
    gate = threading.Event()

    def held(items):
        gate.wait(HANG_GUARD_S)
        return items

    b = MicroBatcher("slow-model", held, Blocking(EXECUTOR), max_wait_ms=0)
    async with asyncio.timeout(HANG_GUARD_S):
        first = asyncio.ensure_future(b.submit(["a"]))
        while not b.stats.batches:
            await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        assert await b.submit(["b"]) == ["b"]
    assert (b.stats.expired, b.stats.abandoned) == (0, 1)


async def test_every_request_ends_when_the_executor_drops_the_batch_waiting_for_a_worker():
    """Runtime.close shuts the request executor down, cancelling work still waiting for a worker: a batch among it
    must end its requests (cancelled), not leave their callers waiting."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="test-review4-one")
    gate, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        gate.wait(HANG_GUARD_S)

    blocking = Blocking(executor)
    holder = asyncio.ensure_future(blocking.run(hold))
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            await asyncio.to_thread(started.wait, HANG_GUARD_S)
            b = MicroBatcher("test-model", lambda items: items, blocking, max_batch_size=2, max_wait_ms=0)
            waiting = [asyncio.ensure_future(b.submit(items)) for items in (["a", "b"], ["c"], ["d", "e", "f"])]
            while not b.stats.batches:  # the first batch waits for the one worker
                await asyncio.sleep(0)
            executor.shutdown(wait=False, cancel_futures=True)
            outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(outcome, BaseException) for outcome in outcomes), outcomes
    finally:
        gate.set()
        await asyncio.gather(holder, return_exceptions=True)


async def test_wait_ready_gives_up_when_cancelled_as_the_load_finishes():
    """wait_ready used asyncio.wait_for, which on Python 3.11 returns normally when a cancel lands as the awaited
    load finishes: an embedded server's command interrupted then (Ctrl-C) went on as if never cancelled."""
    load = asyncio.get_running_loop().create_future()
    server = VerifierServer(server=None, runtime=None, addresses=[], _tasks=[load])
    waiter = asyncio.ensure_future(server.wait_ready(HANG_GUARD_S))
    await asyncio.sleep(0)  # waiting on the load
    # the cancel lands in the loop iteration in which the load's completion reaches wait_ready
    load.add_done_callback(lambda _: waiter.cancel())
    load.set_result(None)
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert waiter.cancelled()


async def test_wait_ready_still_times_out_and_waits_without_a_limit():
    load = asyncio.get_running_loop().create_future()
    server = VerifierServer(server=None, runtime=None, addresses=[], _tasks=[load])
    with pytest.raises(TimeoutError):
        await server.wait_ready(0.01)
    assert not load.done()  # the load itself goes on
    waiter = asyncio.ensure_future(server.wait_ready())
    load.set_result(None)
    async with asyncio.timeout(HANG_GUARD_S):
        await waiter
