"""The batch scheduler: never loses an item when a stream breaks while its request iterator is still being read;
retries an item under a fresh stream id; gives up on a server only after streams that score nothing."""

import asyncio
from pathlib import Path

import pytest

from client import batch
from client.batch import BatchOptions, Item, _Scheduler
from client.errors import VerifierError
from client.types import ChainScore


class Collect:
    """Stands in for the journal writer: what was finished, by position."""

    def __init__(self):
        self.records: dict[int, dict] = {}

    def put(self, position, record):
        assert position not in self.records, f"item {position} finished twice"
        self.records[position] = record


class BreaksOnce:
    """A server whose first stream fails after one request while the transport still pulls the next one
    (gRPC reads the request iterator in its own task, which can run after the call has already failed)."""

    target = "fake:1"

    def __init__(self):
        self.streams = 0
        self.late_pulls: list[asyncio.Task] = []

    async def stream_chains(self, items):
        self.streams += 1
        requests = items.__aiter__()
        if self.streams == 1:
            await requests.__anext__()
            self.late_pulls.append(asyncio.ensure_future(requests.__anext__()))
            raise VerifierError("UNAVAILABLE", "STREAM_BROKEN", "connection reset")
        async for item_id, _request in requests:
            yield item_id, VerifierError("INVALID_ARGUMENT", "TEST", "scored")  # a final per-item answer


async def _run(items, client):
    writer = Collect()
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), concurrency=4, progress=False)
    await asyncio.wait_for(_Scheduler(opts, items, writer).run([client]), 20)
    return writer


def test_an_item_pulled_after_the_stream_broke_goes_back_to_the_queue():
    items = [Item(position=i, id=f"c{i}", request=None, extra={}) for i in range(6)]
    client = BreaksOnce()
    writer = asyncio.run(_run(items, client))
    assert sorted(writer.records) == list(range(6))  # each item answered exactly once, none lost
    assert client.streams == 2 and client.late_pulls[0].done()


class RejectsRepeatedIds:
    """Like the real server: an id an earlier item of the same stream used is DUPLICATE_ID (INVALID_ARGUMENT);
    the first send of each item gets `first` (UNAVAILABLE or RESOURCE_EXHAUSTED), later sends are scored."""

    target = "fake:1"

    def __init__(self, first_code):
        self.first_code, self.streams, self.tried = first_code, 0, set()

    async def stream_chains(self, items):
        self.streams += 1
        seen = set()
        async for item_id, request in items:
            if item_id in seen:
                yield item_id, VerifierError("INVALID_ARGUMENT", "DUPLICATE_ID", "an earlier item used this id")
                continue
            seen.add(item_id)
            if request not in self.tried:
                self.tried.add(request)
                yield item_id, VerifierError(self.first_code, "OVERLOADED", "try again")
            else:
                yield item_id, ChainScore(steps=(), chain_text="", status="ok")


@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
def test_an_item_retried_on_the_same_stream_is_sent_under_a_new_stream_id(code, monkeypatch):
    monkeypatch.setattr(batch, "backoff_s", lambda *a, **k: 0.0)
    items = [Item(position=i, id=f"c{i}", request=f"request {i}", extra={}) for i in range(5)]
    client = RejectsRepeatedIds(code)
    writer = asyncio.run(_run(items, client))
    assert client.streams == 1  # every retry went over the one stream
    assert [writer.records[i]["status"] for i in range(5)] == ["ok"] * 5
    assert [writer.records[i]["id"] for i in range(5)] == [f"c{i}" for i in range(5)]  # mapped back to the row
