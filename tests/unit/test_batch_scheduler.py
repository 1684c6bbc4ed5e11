"""The batch scheduler: never loses an item when a stream breaks while its request iterator is still being read;
retries an item under a fresh stream id; gives up on a server only after streams that score nothing."""

import asyncio
import json
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


async def _run(items, client, **options):
    writer = Collect()
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), **{"concurrency": 4, **options},
                        progress=False)
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


def _ok():
    return ChainScore(steps=(), chain_text="", status="ok")


class StallsOnce:
    """The first stream takes items and never answers (a server that stopped without closing the connection)."""

    target = "fake:1"

    def __init__(self):
        self.streams = 0

    async def stream_chains(self, items):
        self.streams += 1
        if self.streams == 1:
            async for _ in items:
                pass
            await asyncio.Event().wait()
        async for item_id, _request in items:
            yield item_id, _ok()


def test_a_stream_that_returns_nothing_for_the_stall_timeout_is_broken_and_its_rows_sent_again(monkeypatch):
    monkeypatch.setattr(batch, "backoff_s", lambda *a, **k: 0.0)
    items = [Item(position=i, id=f"c{i}", request=None, extra={}) for i in range(4)]
    client = StallsOnce()
    writer = asyncio.run(_run(items, client, stall_timeout_s=0.3))
    assert client.streams == 2 and [writer.records[i]["status"] for i in range(4)] == ["ok"] * 4


class BreaksAfter:
    """Scores `n` items per stream, then the connection resets (as a proxy that limits a stream's age does)."""

    target = "fake:1"

    def __init__(self, n):
        self.n, self.streams = n, 0

    async def stream_chains(self, items):
        self.streams += 1
        done = 0
        async for item_id, _request in items:
            yield item_id, _ok()
            done += 1
            if done == self.n:
                raise VerifierError("UNAVAILABLE", "STREAM_BROKEN", "connection reset by proxy")


def test_streams_that_score_rows_before_they_break_never_add_up_to_a_failed_server(monkeypatch):
    monkeypatch.setattr(batch, "backoff_s", lambda *a, **k: 0.0)
    items = [Item(position=i, id=f"c{i}", request=None, extra={}) for i in range(60)]
    client = BreaksAfter(5)
    writer = asyncio.run(_run(items, client, concurrency=1))  # 12 broken streams, 5 allowed in a row
    assert len(writer.records) == 60 and client.streams >= 12


class LimitedServer:
    """A server whose receive limit is below the client's: a message over it fails the whole stream."""

    target = "fake:1"
    limit = 1 << 20

    def __init__(self):
        self.streams, self.sent = 0, []

    async def stream_chains(self, items):
        self.streams += 1
        async for item_id, request in items:
            self.sent.append(request)
            if len(request) > self.limit:
                raise VerifierError("RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED",
                                    f"SERVER: Received message larger than max ({len(request) + 9} vs. {self.limit})")
            yield item_id, _ok()


def test_a_row_over_the_servers_message_limit_gets_its_own_record_and_is_not_sent_again(monkeypatch):
    monkeypatch.setattr(batch, "backoff_s", lambda *a, **k: 0.0)
    sizes = [10, 2 << 20, 10, 3 << 20, 10, 10]
    items = [Item(position=i, id=f"c{i}", request="x" * size, extra={"group": "g"}, size=size)
             for i, size in enumerate(sizes)]
    client = LimitedServer()
    writer = asyncio.run(_run(items, client, concurrency=1))
    statuses = [writer.records[i]["status"] for i in range(len(sizes))]
    assert [s if isinstance(s, str) else s["reason"] for s in statuses] == [
        "ok", "REQUEST_TOO_LARGE", "ok", "REQUEST_TOO_LARGE", "ok", "ok"]
    assert "1,048,576 bytes" in statuses[1]["message"] and writer.records[1]["group"] == "g"
    assert client.streams == 2  # the first large row broke one stream; the second was never sent
    assert sum(len(r) > LimitedServer.limit for r in client.sent) == 1


class NonFinite:
    target = "fake:1"

    async def stream_chains(self, items):
        async for item_id, request in items:
            score = ChainScore(steps=(), chain_text="", status="ok", knowledge_index=float("nan") if request else 0.5)
            yield item_id, score


def test_a_result_holding_a_non_finite_number_becomes_that_rows_error_record(tmp_path):
    journal = batch.Journal(tmp_path / "out.jsonl")
    summary = batch.BatchSummary()
    writer = batch._Writer(journal, summary, False, list(range(3)), None)
    items = [Item(position=i, id=f"c{i}", request=(i == 1), extra={"group": "g"}) for i in range(3)]
    opts = BatchOptions(input=Path("in.jsonl"), output=tmp_path / "out.jsonl", progress=False)
    asyncio.run(asyncio.wait_for(_Scheduler(opts, items, writer).run([NonFinite()]), 20))
    journal.close()
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert records["c0"]["status"] == records["c2"]["status"] == "ok"
    status = records["c1"]["status"]
    assert (status["code"], status["reason"]) == ("INTERNAL", "UNWRITABLE_RESULT")
    assert "knowledge_index (nan)" in status["message"] and records["c1"]["group"] == "g"
