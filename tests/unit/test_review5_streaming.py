"""run_stream: every item a client sent gets a result or an error status, or the stream ends with an error."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kgverify.v1 import knowledge_service_pb2 as kpb
from server.admission import Admission
from server.batching import MicroBatcher
from server.pipeline.runtime import Blocking
from server.streaming import run_stream

EXECUTOR = ThreadPoolExecutor(2, thread_name_prefix="test-review5-streaming")
HANG_GUARD_S = 30  # only catches a hang; nothing here depends on timing


async def test_an_item_whose_model_batcher_is_cancelled_gets_an_error_status():
    """The collector of a model's micro-batcher cancelled (the server closing it) cancels the futures its requests
    wait on: the item's scoring raised CancelledError though nobody cancelled the item, and the item ended with no
    result while the stream ended OK without it."""
    started, gate = threading.Event(), threading.Event()

    def model(items):
        started.set()
        gate.wait(HANG_GUARD_S)
        return list(items)

    batcher = MicroBatcher("test-model", model, Blocking(EXECUTOR), max_wait_ms=0)

    async def process(chain):
        await batcher.submit([chain.question])
        return kpb.ScoreChainResponse()

    async def requests():
        yield kpb.StreamScoreChainsRequest(id="a")

    async def stop_the_batcher():
        await asyncio.get_running_loop().run_in_executor(None, started.wait, HANG_GUARD_S)
        batcher._collector.cancel()  # what closing the model at shutdown does to its waiting requests

    stopper = asyncio.create_task(stop_the_batcher())
    try:
        results = [r async for r in run_stream(requests(), process, Admission(4), 4, 256)]
    finally:
        gate.set()
        await stopper
    assert [r.id for r in results] == ["a"]
    assert results[0].status.code == 14  # UNAVAILABLE: retryable
    assert "cancelled" in results[0].status.message
    assert not results[0].HasField("result")


async def test_the_items_of_a_stream_whose_client_left_are_still_cancelled():
    """The distinction above must not turn a real cancel of the stream into error statuses it keeps producing."""
    entered = asyncio.Event()
    cancelled = []

    async def process(chain):
        entered.set()
        try:
            await asyncio.sleep(HANG_GUARD_S)
        except asyncio.CancelledError:
            cancelled.append(chain.question)
            raise
        return kpb.ScoreChainResponse()

    async def requests():
        yield kpb.StreamScoreChainsRequest(id="a", chain=kpb.ScoreChainRequest(question="q"))
        await asyncio.sleep(HANG_GUARD_S)

    async def consume():
        return [r async for r in run_stream(requests(), process, Admission(4), 4, 256)]

    consumer = asyncio.create_task(consume())
    await entered.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await asyncio.sleep(0)
    assert cancelled == ["q"]


class _ReadFailed(Exception):
    pass


async def test_items_running_when_the_request_stream_fails_still_get_their_results():
    """The request iterator raising (not a cancel) skipped the wait for the items already running: their results
    were dropped and the stream ended with the error, though the client had sent them."""
    release = asyncio.Event()
    entered = asyncio.Event()

    async def process(chain):
        entered.set()
        await release.wait()
        return kpb.ScoreChainResponse()

    async def requests():
        yield kpb.StreamScoreChainsRequest(id="a")
        await entered.wait()
        asyncio.get_running_loop().call_soon(release.set)  # finishes only after the read has failed
        raise _ReadFailed("the request stream broke")

    results = []
    with pytest.raises(_ReadFailed):
        async for response in run_stream(requests(), process, Admission(4), 4, 256):
            results.append(response)
    assert [(r.id, r.status.code) for r in results] == [("a", 0)]
