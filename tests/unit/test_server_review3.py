"""Server runtime: the micro-batcher's errors and counters, request summaries for the log."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from server import metrics
from server.batching import MicroBatcher
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError
from server.pipeline.runtime import Blocking

EXECUTOR = ThreadPoolExecutor(2, thread_name_prefix="test-review3")
HANG_GUARD_S = 30  # only catches a hang; nothing here depends on timing


class DeviceTimeout(TimeoutError):
    pass


def _model(items):
    if "slow-device" in items:
        raise DeviceTimeout("the device did not answer within 5 s")
    if "boom" in items:
        raise ValueError("the model cannot take this item")
    return [f"out:{item}" for item in items]


async def test_a_timeout_raised_by_the_model_itself_is_its_own_error_not_the_requests_deadline():
    """A TimeoutError from inside the model call (its device or library timing out) was reported as "the deadline
    expired while waiting for the model" (DEADLINE_EXCEEDED), even for a request without any deadline."""
    b = MicroBatcher("test-model", _model, Blocking(EXECUTOR), max_wait_ms=0)
    async with asyncio.timeout(HANG_GUARD_S):
        for deadline in (Deadline(None), Deadline.after(HANG_GUARD_S)):
            with pytest.raises(DeviceTimeout, match="the device did not answer"):
                await b.submit(["slow-device"], deadline)
        assert b.stats.expired == 0
        assert await b.submit(["fine"]) == ["out:fine"]

        # a deadline that really expires while waiting still says so
        gate = threading.Event()

        def held(items):
            gate.wait(HANG_GUARD_S)
            return items

        slow = MicroBatcher("slow-model", held, Blocking(EXECUTOR), max_wait_ms=0)
        try:
            with pytest.raises(BackendTimeoutError, match="deadline expired while waiting for the slow-model"):
                await slow.submit(["a"], Deadline.after(0.05))
        finally:
            gate.set()
        assert slow.stats.expired == 1


async def test_batch_counters_count_only_model_calls_that_returned_their_results():
    """A batch was counted (kgverify_batches_total, items, size) when taken from the queue: a model call that then
    raised, or items of a request gone before the call, counted as scored."""
    served, failed = [], []
    b = MicroBatcher("test-model", _model, Blocking(EXECUTOR), max_wait_ms=0,
                     on_batch=lambda name, size, waits: served.append((name, size, len(waits))),
                     on_failure=failed.append)
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(ValueError, match="cannot take"):
            await b.submit(["boom", "x"])
        assert served == [] and failed == ["test-model"]
        assert (b.stats.served_batches, b.stats.served_items, b.stats.failed) == (0, 0, 1)
        assert await b.submit(["a", "b"]) == ["out:a", "out:b"]
        assert served == [("test-model", 2, 1)]
        assert (b.stats.served_batches, b.stats.served_items, b.stats.largest_batch) == (1, 2, 2)


async def test_items_of_a_request_gone_before_its_model_call_are_not_counted_as_scored():
    executor = ThreadPoolExecutor(1, thread_name_prefix="busy")
    gate = threading.Event()
    served = []
    b = MicroBatcher("test-model", _model, Blocking(executor), max_wait_ms=0,
                     on_batch=lambda name, size, waits: served.append((size, len(waits))))
    loop = asyncio.get_running_loop()
    try:
        held = loop.run_in_executor(executor, gate.wait, HANG_GUARD_S)  # the only worker is busy
        gone = asyncio.ensure_future(b.submit([f"gone{i}" for i in range(40)]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        async with asyncio.timeout(HANG_GUARD_S):
            while b.stats.batches < 1:  # both requests are in the batch waiting for the worker
                await asyncio.sleep(0.001)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        gate.set()
        async with asyncio.timeout(HANG_GUARD_S):
            assert await kept == ["out:kept"]
            await held
        assert served == [(1, 1)]  # one item scored, one request's queue wait
        assert b.stats.served_items == 1
    finally:
        gate.set()
        executor.shutdown()


async def test_a_shared_batch_that_fails_counts_one_failure_and_each_requests_own_call():
    """The batch shared by two requests fails; each request's items then run alone: the good one is served."""
    gate = threading.Event()
    executor = ThreadPoolExecutor(1, thread_name_prefix="busy")
    served, failed = [], []
    b = MicroBatcher("test-model", _model, Blocking(executor), max_wait_ms=0,
                     on_batch=lambda name, size, waits: served.append(size), on_failure=failed.append)
    loop = asyncio.get_running_loop()
    try:
        held = loop.run_in_executor(executor, gate.wait, HANG_GUARD_S)
        bad = asyncio.ensure_future(b.submit(["boom"]))
        good = asyncio.ensure_future(b.submit(["g1", "g2"]))
        await asyncio.sleep(0)
        gate.set()
        async with asyncio.timeout(HANG_GUARD_S):
            await held
            assert await good == ["out:g1", "out:g2"]
            with pytest.raises(ValueError):
                await bad
        assert sorted(served) == [2] and failed == ["test-model", "test-model"]
    finally:
        gate.set()
        executor.shutdown()


def test_a_failed_model_call_is_exported_apart_from_served_ones():
    def value(name):
        return REGISTRY.get_sample_value(name, {"model": "review3-model"}) or 0.0

    before = value("kgverify_batch_failures_total"), value("kgverify_batches_total")
    metrics.record_batch_failure("review3-model")
    assert (value("kgverify_batch_failures_total"), value("kgverify_batches_total")) == (before[0] + 1, before[1])


def test_a_request_summary_formats_a_bounded_message_whatever_the_size_of_its_strings(monkeypatch):
    """With log_request_text, a request holding one 4 MB step was copied whole, then formatted whole (16 MB of
    escapes for control characters, seconds of the event loop) to log its first 500 characters."""
    from google.protobuf import text_format

    from kgverify.v1 import knowledge_service_pb2 as kpb
    from server.interceptors import request_summary

    request = kpb.ScoreKnowledgeRequest(question="q?")
    request.steps.append("\x01" * (4 * 1024 * 1024 - 100))
    request.steps.append("second")
    full = text_format.MessageToString(request, as_one_line=True, as_utf8=True)
    formatted = []
    real = text_format.MessageToString
    monkeypatch.setattr(text_format, "MessageToString", lambda message, **kw: formatted.append(message.ByteSize())
                        or real(message, **kw))
    summary = request_summary(request)
    assert formatted and max(formatted) < 2_000, formatted
    assert summary.startswith(full[:500]) and summary[500:].startswith("... (over ")
    assert len(request.steps[0]) == 4 * 1024 * 1024 - 100  # the request itself is left as it was

    small = kpb.ScoreKnowledgeRequest(question="q?", steps=["a", "b\n"])
    assert request_summary(small) == real(small, as_one_line=True, as_utf8=True)  # small requests: their whole text
    medium = kpb.ScoreKnowledgeRequest(question="q?", steps=["x" * 300, "y" * 300])
    text = real(medium, as_one_line=True, as_utf8=True)
    assert request_summary(medium) == text[:500] + f"... ({len(text)} chars)"


async def test_a_cancel_landing_once_the_batch_has_set_the_result_is_not_swallowed():
    """On 3.11, asyncio.wait_for returned the result when the caller was cancelled after the batch had set it and
    before the caller ran: the cancel was lost, and a call whose client had gone (or a server stopping) ran on."""
    loop = asyncio.get_running_loop()
    callers: list[asyncio.Task] = []
    # the observer runs in the collector just before the results are set: the cancel lands right after them
    b = MicroBatcher("test-model", _model, Blocking(EXECUTOR), max_wait_ms=0,
                     on_batch=lambda *_: loop.call_soon(callers[0].cancel))
    async with asyncio.timeout(HANG_GUARD_S):
        for deadline in (Deadline.after(HANG_GUARD_S), Deadline(None)):
            callers[:] = [asyncio.ensure_future(b.submit(["a"], deadline))]
            with pytest.raises(asyncio.CancelledError):
                await callers[0]
        b.on_batch = None
        assert await b.submit(["b"], Deadline.after(HANG_GUARD_S)) == ["out:b"]


async def test_a_failing_model_call_of_a_server_batcher_is_counted_as_a_failure_not_served():
    from server.backends.registry import BackendContext
    from server.config import Settings
    from server.pipeline.runtime import Blocking

    def value(name):
        return REGISTRY.get_sample_value(name, {"model": "review3-failing"}) or 0.0

    def run(items):
        raise RuntimeError("the model broke")

    batcher = BackendContext(Settings(), Blocking(None)).batcher("review3-failing", run)  # as the server builds them
    before = value("kgverify_batch_failures_total"), value("kgverify_batches_total")
    with pytest.raises(RuntimeError):
        await batcher.submit(["a claim"])
    assert (value("kgverify_batch_failures_total"), value("kgverify_batches_total")) == (before[0] + 1, before[1])
