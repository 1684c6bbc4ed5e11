"""The micro-batcher: results never mixed, batch bounds, max_wait, deadlines, cancellation, failures, disabled mode."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.batching import MicroBatcher
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError, DeviceOutOfMemoryError, is_out_of_memory
from server.pipeline.runtime import Blocking

EXECUTOR = ThreadPoolExecutor(2, thread_name_prefix="test-batching")
HANG_GUARD_S = 30  # only catches a hang; nothing here depends on timing


class Model:
    """A model that records every call, can be held at a gate, and fails on the item "boom"."""

    def __init__(self, gated: bool = False):
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.started.set()
        self.gate.wait(HANG_GUARD_S)
        if "boom" in items:
            raise ModelFailure("the model failed on this batch")
        return [f"out:{item}" for item in items]

    def seen(self) -> set[str]:
        return {item for call in self.calls for item in call}


class ModelFailure(RuntimeError):
    pass


def batcher(model, **kw) -> MicroBatcher:
    kw = {"max_batch_size": 64, "max_wait_ms": 2.0, **kw}
    return MicroBatcher("test-model", model, Blocking(EXECUTOR), **kw)


async def busy(b: MicroBatcher, model: Model) -> asyncio.Task:
    """A request whose batch holds the model until model.gate is set."""
    task = asyncio.ensure_future(b.submit(["first"]))
    await asyncio.to_thread(model.started.wait, HANG_GUARD_S)
    return task


async def until_queued(b: MicroBatcher, items: int) -> None:
    while b.queued_items() < items:
        await asyncio.sleep(0)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 90), min_size=1, max_size=40), max_batch_size=st.integers(1, 70),
       max_wait_ms=st.sampled_from([0.0, 0.5, 3.0]), lengths=st.randoms(use_true_random=False))
def test_every_request_gets_exactly_its_own_results_in_order(sizes, max_batch_size, max_wait_ms, lengths):
    model = Model()
    b = batcher(model, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
    # items of random lengths, so sorting by length really reorders them within a batch
    requests = [[f"r{r}i{i}" + "x" * lengths.randint(0, 30) for i in range(n)] for r, n in enumerate(sizes)]

    async def main():
        async with asyncio.timeout(HANG_GUARD_S):
            return await asyncio.gather(*(b.submit(items) for items in requests))

    results = asyncio.run(main())
    assert results == [[f"out:{item}" for item in items] for items in requests]
    assert all(len(call) <= max_batch_size for call in model.calls)
    assert sum(len(call) for call in model.calls) == sum(sizes)
    assert all(call == sorted(call, key=len) for call in model.calls)
    assert b.stats.items == sum(sizes) and b.stats.batches == len(model.calls)


async def test_concurrent_requests_share_batches_up_to_max_batch_size():
    model = Model(gated=True)
    b = batcher(model, max_batch_size=8)
    first = await busy(b, model)
    waiting = [asyncio.ensure_future(b.submit([f"r{r}i{i}" for i in range(3)])) for r in range(5)]
    await until_queued(b, 15)
    model.gate.set()
    results = await asyncio.gather(first, *waiting)
    assert results[1:] == [[f"out:r{r}i{i}" for i in range(3)] for r in range(5)]
    assert [len(call) for call in model.calls] == [1, 8, 7]  # the queued 15 items in two calls, none over 8


async def test_a_request_larger_than_max_batch_size_is_split():
    model = Model()
    b = batcher(model, max_batch_size=64)
    items = [f"i{i:03d}" for i in range(150)]
    assert await b.submit(items) == [f"out:{item}" for item in items]
    assert [len(call) for call in model.calls] == [64, 64, 22]


async def test_max_wait_flushes_a_lone_request_and_gathers_requests_sent_together():
    model = Model()
    b = batcher(model, max_batch_size=64, max_wait_ms=50)
    async with asyncio.timeout(HANG_GUARD_S):
        assert await b.submit(["alone"]) == ["out:alone"]  # never a full batch: only max_wait sends it
        pair = await asyncio.gather(b.submit(["a1", "a2"]), b.submit(["b1"]))
    assert pair == [["out:a1", "out:a2"], ["out:b1"]]
    assert [sorted(call) for call in model.calls] == [["alone"], ["a1", "a2", "b1"]]


async def test_a_request_whose_deadline_expires_while_queued_gets_the_deadline_error():
    model = Model(gated=True)
    b = batcher(model)
    first = await busy(b, model)
    with pytest.raises(BackendTimeoutError) as info:
        await b.submit(["late-1", "late-2"], Deadline.after(0.05))
    assert info.value.code == "DEADLINE_EXCEEDED"
    later = asyncio.ensure_future(b.submit(["next"]))
    model.gate.set()
    assert await first == ["out:first"] and await later == ["out:next"]
    assert not {"late-1", "late-2"} & model.seen()  # its queued items were dropped
    with pytest.raises(BackendTimeoutError):
        await b.submit(["expired"], Deadline(at=0.0))
    assert "expired" not in model.seen()


async def test_a_cancelled_request_has_its_queued_items_dropped():
    model = Model(gated=True)
    b = batcher(model)
    first = await busy(b, model)
    cancelled = asyncio.ensure_future(b.submit(["gone-1", "gone-2"]))
    kept = asyncio.ensure_future(b.submit(["kept"]))
    await until_queued(b, 3)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    model.gate.set()
    assert await first == ["out:first"] and await kept == ["out:kept"]
    assert not {"gone-1", "gone-2"} & model.seen()
    assert b.stats.abandoned == 1


async def test_a_model_failure_fails_only_the_request_whose_items_fail_with_its_own_error():
    model = Model(gated=True)
    b = batcher(model, max_batch_size=3)
    first = await busy(b, model)
    failing = asyncio.ensure_future(b.submit(["boom", "ok-a"]))
    bystander = asyncio.ensure_future(b.submit(["ok-b"]))  # shares the failing batch
    later = asyncio.ensure_future(b.submit(["ok-c", "ok-d"]))  # partly in it (fair shares), partly in the next
    await until_queued(b, 5)
    model.gate.set()
    with pytest.raises(ModelFailure):
        await failing
    assert await bystander == ["out:ok-b"]  # run again alone: the bystander is not failed by another's item
    assert await later == ["out:ok-c", "out:ok-d"]
    shared = next(call for call in model.calls if "boom" in call)
    assert "ok-b" in shared  # the bystander did share the failing batch
    assert await first == ["out:first"]
    assert await b.submit(["after"]) == ["out:after"]  # the batcher keeps serving


async def test_a_huge_request_cannot_hold_the_model_while_small_ones_wait():
    """Batches are shared fairly: a 3,000-claim chain queued first no longer delays a single claim by its whole
    length (FIFO served it after all 47 batches of the big one)."""
    model = Model(gated=True)
    b = batcher(model, max_batch_size=64)
    first = await busy(b, model)
    huge = asyncio.ensure_future(b.submit([f"h{i}" for i in range(3000)]))
    await until_queued(b, 3000)
    small = asyncio.ensure_future(b.submit(["small"]))
    await until_queued(b, 3001)
    model.gate.set()
    assert await small == ["out:small"]
    assert next(n for n, call in enumerate(model.calls) if "small" in call) == 1  # the first batch after "first"
    assert len(model.calls[1]) == 64 and not huge.done()
    assert await huge == [f"out:h{i}" for i in range(3000)] and await first == ["out:first"]


async def test_disabled_never_combines_requests_but_still_batches_each_request():
    model = Model(gated=True)
    b = batcher(model, enabled=False, max_batch_size=4)
    first = await busy(b, model)
    waiting = [asyncio.ensure_future(b.submit([f"r{r}i{i}" for i in range(6)])) for r in range(3)]
    await until_queued(b, 18)
    model.gate.set()
    results = await asyncio.gather(first, *waiting)
    assert results[1:] == [[f"out:r{r}i{i}" for i in range(6)] for r in range(3)]
    for call in model.calls[1:]:
        assert len({item.split("i")[0] for item in call}) == 1  # one request per model call
    assert [len(call) for call in model.calls] == [1, 4, 4, 4, 2, 2, 2]  # round robin among the requests


async def test_an_observer_sees_every_batch():
    seen = []
    b = batcher(Model(), max_batch_size=3, on_batch=lambda name, size, waits: seen.append((name, size, len(waits))))
    await b.submit(["a", "b", "c", "d"])
    assert seen == [("test-model", 3, 1), ("test-model", 1, 0)]


def _cpu_allocation_failure() -> RuntimeError:
    """The RuntimeError torch's CPU allocator raises for an allocation it cannot make (a real one, 4 PiB)."""
    import torch

    try:
        torch.empty(2**50, dtype=torch.float32)
    except RuntimeError as exc:
        return exc
    raise AssertionError("a 4 PiB allocation succeeded")


def _out_of_memory_errors():
    import torch

    return [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        _cpu_allocation_failure(),
        MemoryError(),
    ]


@pytest.mark.parametrize("error", _out_of_memory_errors(), ids=["torch-oom", "cublas", "cpu-allocator", "memory"])
async def test_running_out_of_device_memory_is_resource_exhausted_for_that_batch_only(error):
    def model(items):
        if "huge" in items:
            raise error
        return [f"out:{item}" for item in items]

    b = batcher(model)
    with pytest.raises(DeviceOutOfMemoryError) as info:
        await b.submit(["huge", "x"])
    assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "DEVICE_OUT_OF_MEMORY"
    assert info.value.retry_after_s > 0 and "KGV_BATCHING__MAX_BATCH_SIZE" in info.value.message
    assert b.stats.out_of_memory == 1
    assert await b.submit(["after"]) == ["out:after"]  # the batcher keeps serving


def test_other_model_errors_are_not_taken_for_out_of_memory():
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors carry allocator messages
    assert is_out_of_memory(_cpu_allocation_failure())


async def test_a_stoppable_model_drops_the_work_of_a_request_past_its_deadline():
    from server.batching import Abandoned

    passes: list[int] = []

    def model(items: list[str], stop) -> list[str]:
        for i in range(10_000 if "long" in items else 0):  # "long" would take ~10 s of passes
            if stop():
                raise Abandoned()
            passes.append(i)
            threading.Event().wait(0.001)
        return [f"out:{item}" for item in items]

    b = batcher(model, stoppable=True)
    with pytest.raises(BackendTimeoutError):
        await b.submit(["long"], Deadline.after(0.05))
    await asyncio.wait_for(b._collector, HANG_GUARD_S)
    assert 0 < len(passes) < 10_000 and b.stats.expired >= 1
    assert await b.submit(["short"], Deadline.after(HANG_GUARD_S)) == ["out:short"]


async def test_the_batchers_log_lines_do_not_carry_the_request_id_of_the_request_that_started_it(caplog):
    """The collector task copied the context of the first request's task: its warnings about batches of other
    requests were logged under that request's id."""
    import logging

    from server.context import request_id_var

    seen: list[str] = []

    class Ids(logging.Filter):
        def filter(self, record):
            seen.append(request_id_var.get())
            return True

    model = Model(gated=True)
    b = batcher(model, max_batch_size=4)
    logger = logging.getLogger("kgverify.batching")
    ids = Ids()
    logger.addFilter(ids)
    try:
        async def request(request_id: str, items: list[str]):
            request_id_var.set(request_id)
            return await b.submit(items)

        first = asyncio.ensure_future(request("starter", ["a"]))  # starts the collector; its batch holds the model
        await asyncio.to_thread(model.started.wait, HANG_GUARD_S)
        others = asyncio.gather(request("r1", ["boom"]), request("r2", ["b"]), return_exceptions=True)
        await until_queued(b, 2)
        model.gate.set()
        assert await first == ["out:a"]
        results = await others  # one shared batch fails: the collector logs a warning about it
    finally:
        logger.removeFilter(ids)
    assert isinstance(results[0], ModelFailure) and results[1] == ["out:b"]
    assert seen and "starter" not in seen, seen
