"""StreamScoreChains: items run concurrently, each with its own status; a bad item never ends the stream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import AsyncIterator, Awaitable, Callable

from kgverify.v1 import knowledge_service_pb2 as kpb

from .admission import Admission
from .context import request_id_var
from .errors import OK_STATUS, error_status
from .interceptors import Refused, Undecodable
from .pipeline.errors import InvalidArgumentError, KgverifyError
from .servicers.convert import fitting

log = logging.getLogger(__name__)
_DONE = object()
# Room for a result's status (message, ErrorInfo, BadRequest: a few KiB at most) beside an echoed id.
_ECHO_HEADROOM_BYTES = 16 * 1024


class ItemCancelledError(KgverifyError):
    """The work a stream item waited on was cancelled inside the server, though the item was not (retryable)."""

    code = "UNAVAILABLE"
    reason = "WORK_CANCELLED"


def echoed_id(item_id: str, max_id_chars: int, max_message_bytes: int | None) -> str:
    """The id a result carries: the item's id as sent. Never cut to max_id_chars: a 257-character id cut to 256
    would read as the result of a valid item whose id is those 256 characters. An id so long that it and a status
    would not fit one message (only possible near KGV_SERVER__MAX_MESSAGE_BYTES) comes back as its first
    max_id_chars characters plus "… (N characters)": longer than any valid id, so still never one."""
    if max_message_bytes is None or len(item_id) <= max_id_chars or \
            len(item_id.encode("utf-8")) + _ECHO_HEADROOM_BYTES <= max_message_bytes:
        return item_id
    return f"{item_id[:max_id_chars]}… ({len(item_id)} characters)"


def _digest(item_id: str) -> bytes:
    """What the stream remembers of each id it saw (16 bytes however long the id)."""
    return hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()


async def run_stream(
    requests: AsyncIterator[kpb.StreamScoreChainsRequest],
    process: Callable[[kpb.ScoreChainRequest], Awaitable[kpb.ScoreChainResponse]],
    admission: Admission,
    max_inflight: int,
    max_id_chars: int,
    max_message_bytes: int | None = None,
) -> AsyncIterator[kpb.StreamScoreChainsResponse]:
    """Reads items while at most max_inflight run; yields results as they finish (not in request order: each
    result carries its item's id, so ids must be unique within the stream).

    An item whose id an earlier item of the stream already used gets INVALID_ARGUMENT (DUPLICATE_ID) and is not
    scored; the first item with that id is."""
    results: asyncio.Queue = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)
    running: set[asyncio.Task] = set()
    stream_id = request_id_var.get()
    # Digests of the valid ids read so far. Not bounded, and it cannot be without breaking the DUPLICATE_ID
    # promise: results come back in any order, so an id reused after its first result was sent is as ambiguous to
    # the client as one reused while in flight, and only remembering every id tells it apart. A digest is 16 bytes
    # however long the id (about 82 bytes of memory per item with the set's own overhead, measured: 82 MB for a
    # million items), so a stream's memory grows with its items only at that rate, and it is freed with the stream.
    seen: set[bytes] = set()

    async def run_item(item: kpb.StreamScoreChainsRequest, item_id: str, duplicate: bool) -> None:
        # The slot taken by read() is released once the result has been sent, so
        # items being processed plus results not yet sent stay within max_inflight.
        # ascii(): the id as sent may hold line breaks or control characters, and the request id starts every log
        # line of the item (x-request-id is taken only when printable; an item id is whatever the client sent)
        request_id_var.set(f"{stream_id}/{ascii(item_id[:32])[1:-1]}")
        try:
            response = kpb.StreamScoreChainsResponse(id=item_id)
            try:
                if isinstance(item, Undecodable):
                    raise item.error()
                if not item.id:
                    raise InvalidArgumentError.single("id", "is required")
                if len(item.id) > max_id_chars:
                    raise InvalidArgumentError.single(
                        "id", f"is {len(item.id)} characters long; the limit is {max_id_chars} "
                              "(KGV_LIMITS__MAX_ID_CHARS)")
                if duplicate:
                    raise InvalidArgumentError.single(
                        "id", "is the id of an earlier item of this stream: results come back in any order, so "
                              "each item needs its own id (this item was not scored)", reason="DUPLICATE_ID")
                if isinstance(item, Refused):  # its chain's repeated fields are over the limits
                    raise item.error()
                with admission:
                    response.result.CopyFrom(await process(item.chain))
                response.status.CopyFrom(OK_STATUS)
                if max_message_bytes is not None:  # the result with the item's id (up to 4 bytes a character)
                    fitting(response, max_message_bytes)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # the item itself: the stream ended or its client left
                    raise
                # Work the item waited on was cancelled, not the item (a model's batcher closed as the server stops):
                # the client sent the item, so it gets a status rather than no result in a stream that ends OK.
                log.warning("stream item failed: the work it waited on was cancelled")
                response.ClearField("result")
                response.status.CopyFrom(error_status(ItemCancelledError(
                    "the scoring of this item was cancelled inside the server (as when it shuts down); retry it"),
                    request_id_var.get()))
            except Exception as exc:  # every failure becomes this item's status
                if not isinstance(exc, KgverifyError):
                    log.exception("stream item failed")
                response.ClearField("result")
                response.status.CopyFrom(error_status(exc, request_id_var.get()))
            results.put_nowait(response)
        except asyncio.CancelledError:
            slots.release()
            raise

    async def finish() -> None:
        if running:
            await asyncio.gather(*list(running), return_exceptions=True)

    async def read() -> None:
        try:
            try:
                async for item in requests:
                    await slots.acquire()
                    duplicate = False
                    if isinstance(item, Undecodable):
                        item_id = ""
                    else:
                        item_id = echoed_id(item.id, max_id_chars, max_message_bytes)
                        if item.id and len(item.id) <= max_id_chars:  # checked here, in the order the items came
                            digest = _digest(item.id)
                            duplicate = digest in seen
                            seen.add(digest)
                    task = asyncio.create_task(run_item(item, item_id, duplicate))
                    running.add(task)
                    task.add_done_callback(running.discard)
            except Exception:
                # the request stream broke (not a cancel): the items already read still get their results, then
                # the stream ends with the error
                await finish()
                raise
            await finish()
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

