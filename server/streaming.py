"""StreamScoreChains: items run concurrently, each with its own status; a bad item never ends the stream."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable

from kgverify.v1 import knowledge_service_pb2 as kpb

from .admission import Admission
from .context import request_id_var
from .errors import OK_STATUS, error_status
from .interceptors import Undecodable
from .pipeline.errors import InvalidArgumentError, KgverifyError

log = logging.getLogger(__name__)
_DONE = object()


async def run_stream(
    requests: AsyncIterator[kpb.StreamScoreChainsRequest],
    process: Callable[[kpb.ScoreChainRequest], Awaitable[kpb.ScoreChainResponse]],
    admission: Admission,
    max_inflight: int,
    max_id_chars: int,
) -> AsyncIterator[kpb.StreamScoreChainsResponse]:
    """Reads items while at most max_inflight run; yields results as they finish."""
    results: asyncio.Queue = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)
    running: set[asyncio.Task] = set()
    stream_id = request_id_var.get()

    async def run_item(item: kpb.StreamScoreChainsRequest, item_id: str) -> None:
        # The slot taken by read() is released once the result has been sent, so
        # items being processed plus results not yet sent stay within max_inflight.
        request_id_var.set(f"{stream_id}/{item_id[:32]}")
        try:
            response = kpb.StreamScoreChainsResponse(id=item_id)
            try:
                if isinstance(item, Undecodable):
                    raise item.error()
                if not item.id:
                    raise InvalidArgumentError.single("id", "is required")
                if len(item.id) > max_id_chars:
                    raise InvalidArgumentError.single("id", f"is longer than {max_id_chars} characters")
                with admission:
                    response.result.CopyFrom(await process(item.chain))
                response.status.CopyFrom(OK_STATUS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure becomes this item's status
                if not isinstance(exc, KgverifyError):
                    log.exception("stream item failed")
                response.ClearField("result")
                response.status.CopyFrom(error_status(exc, request_id_var.get()))
            results.put_nowait(response)
        except asyncio.CancelledError:
            slots.release()
            raise

    async def read() -> None:
        try:
            async for item in requests:
                await slots.acquire()
                item_id = "" if isinstance(item, Undecodable) else item.id[:max_id_chars]
                task = asyncio.create_task(run_item(item, item_id))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*list(running), return_exceptions=True)
        finally:
            results.put_nowait(_DONE)

    reader = asyncio.create_task(read())
    try:
        while True:
            response = await results.get()
            if response is _DONE:
                break
            yield response
            slots.release()
        await reader
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()

