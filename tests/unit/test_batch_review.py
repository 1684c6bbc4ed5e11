"""`kgverify batch` input reading: a row it cannot read is that row's error naming its line, a file that breaks off
midway stops the run naming where, and long CSV cells are read."""

import asyncio
import gzip
import json

import pytest

from client.batch_io import InputError, RowError, read_rows
from client.cli import main


def _batch(*args):
    return main(["batch", "--no-progress", *map(str, args)])


def test_a_jsonl_line_with_a_number_python_will_not_convert_is_its_own_row_error(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": ' + "9" * 5000 + ', "reasoning": "x"}\n{"id": "b", "reasoning": "y"}\n')
    rows = dict(read_rows(source))
    bad = rows["line-1"]
    assert isinstance(bad, RowError) and bad.reason == "INVALID_JSON" and "line 1" in str(bad)
    assert rows["line-2"] == {"id": "b", "reasoning": "y"}


def test_a_csv_list_cell_with_a_number_python_will_not_convert_is_its_own_row_error(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text('id,steps\na,"[' + "9" * 5000 + ']"\nb,"[""ok""]"\n')
    rows = dict(read_rows(source))
    assert isinstance(rows["row-1"], RowError) and "row 1" in str(rows["row-1"])
    assert rows["row-2"] == {"id": "b", "steps": ["ok"]}


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    source = tmp_path / "rows.csv"
    long = "Aspirin inhibits COX. " * 10_000  # 220,000 characters; the csv module stops at 131,072 by default
    source.write_text(f"id,reasoning\na,{long}\nb,short\n")
    rows = dict(read_rows(source))
    assert rows["row-1"] == {"id": "a", "reasoning": long} and rows["row-2"]["id"] == "b"


def _truncated_gzip(path, lines):
    data = gzip.compress("".join(json.dumps({"id": f"r{i}", "reasoning": f"step {i} " * 50}) + "\n"
                                 for i in range(lines)).encode())
    path.write_bytes(data[:len(data) // 2])


def test_a_gzip_file_that_breaks_off_midway_is_an_input_error_naming_where(tmp_path):
    source = tmp_path / "rows.jsonl.gz"
    _truncated_gzip(source, 2000)
    with pytest.raises(InputError) as info:
        for _ in read_rows(source):
            pass
    message = str(info.value)
    assert str(source) in message and "after line" in message and "end-of-stream" in message


def test_a_truncated_gzip_input_stops_the_run_with_status_2_before_any_record(tmp_path, capsys):
    source = tmp_path / "rows.jsonl.gz"
    _truncated_gzip(source, 2000)
    out = tmp_path / "out.jsonl"
    assert _batch("--input", source, "--output", out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "batch failed:" in err and "after line" in err
    assert not out.exists()


class WatchedRoom(asyncio.Event):
    """The writer's room, telling when the scheduler waits for it."""

    def __init__(self):
        super().__init__()
        self.set()
        self.waited = asyncio.Event()

    async def wait(self):
        if not self.is_set():
            self.waited.set()
        return await super().wait()


class HoldsTheFirstRow:
    """A server that keeps the first row's answer until the client waits to read on (its --keep-order buffer
    full) or has sent every other row; it answers the others at once."""

    target = "fake:1"

    def __init__(self, room, total):
        self.room, self.total, self.received, self.released_at = room, total, 0, None

    async def stream_chains(self, items):
        from client.types import ChainScore

        score = ChainScore(steps=(), chain_text="", status="ok", knowledge_index=0.5)
        incoming: asyncio.Queue = asyncio.Queue()

        async def read():
            async for request in items:
                await incoming.put(request)
            await incoming.put(None)

        reader = asyncio.ensure_future(read())
        held = None
        try:
            while True:
                getter, waited = asyncio.ensure_future(incoming.get()), asyncio.ensure_future(self.room.waited.wait())
                await asyncio.wait({getter, waited}, return_when=asyncio.FIRST_COMPLETED)
                waited.cancel()
                if not getter.done():
                    getter.cancel()
                    self.room.waited.clear()
                    if held is not None:  # the client reads no further until the first row is answered
                        self.released_at, held = self.received, None
                        yield held_id, score
                    continue
                request = getter.result()
                if request is None:
                    return
                item_id, position = request
                self.received += 1
                if position == 0:
                    held = held_id = item_id
                    continue
                yield item_id, score
                if held is not None and self.received == self.total:
                    self.released_at, held = self.received, None
                    yield held_id, score
        finally:
            reader.cancel()


def test_keep_order_reads_no_further_while_its_buffer_is_full_and_writes_every_row_in_order(tmp_path):
    from pathlib import Path

    from client import batch

    total, limit, window = 60, 4, 2
    journal = batch.Journal(tmp_path / "out.jsonl")
    writer = batch._Writer(journal, batch.BatchSummary(), True, limit=limit)
    held: list[int] = []
    put = writer.put

    def watched(position, record):
        put(position, record)
        held.append(len(writer._buffer))

    writer.put = watched
    rows = ((i, batch.Item(position=i, id=f"c{i:02d}", request=i, extra={})) for i in range(total))
    opts = batch.BatchOptions(input=Path("in.jsonl"), output=tmp_path / "out.jsonl", concurrency=window,
                              keep_order=True, progress=False)

    async def run():
        writer.room = WatchedRoom()
        server = HoldsTheFirstRow(writer.room, total)
        scheduler = batch._Scheduler(opts, batch._items_to_send(rows, writer, [server]), writer, total)
        await asyncio.wait_for(scheduler.run([server]), 20)
        return server

    server = asyncio.run(run())
    journal.close()
    assert server.released_at is not None and server.released_at < total  # it stopped reading: the buffer was full
    assert max(held) <= limit + window
    ids = [json.loads(line)["id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert ids == [f"c{i:02d}" for i in range(total)]


@pytest.mark.parametrize("name", ["scores.csv", "scores.parquet"])
def test_export_writes_a_record_at_a_time_instead_of_holding_the_journal(tmp_path, monkeypatch, name):
    import tracemalloc

    import pyarrow.parquet as pq

    from client import batch_io

    monkeypatch.setattr(batch_io, "EXPORT_CHUNK_BYTES", 1 << 20, raising=False)
    journal = tmp_path / "scores.jsonl"
    evidence = [{"fact_id": "f", "text": "Aspirin irreversibly inhibits cyclooxygenase. " * 100}] * 4
    with open(journal, "w") as fh:
        for i in range(600):  # ~33 MB: each record carries its evidence text, as a batch journal does
            record = {"id": f"r{i}", "status": "ok", "knowledge_index": 0.5, "group": "g", "llm_calls": 0,
                      "steps": [{"index": j, "text": "A step.", "evidence": evidence} for j in range(3)]}
            fh.write(json.dumps(record) + "\n")
    out = tmp_path / name
    tracemalloc.start()
    try:
        assert batch_io.export_journal(journal, out) == 600
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < journal.stat().st_size / 4, (peak, journal.stat().st_size)
    if name.endswith(".csv"):
        assert out.read_text().count("\n") >= 601
    else:
        table = pq.read_table(out)
        assert table.num_rows == 600 and table.column("id").to_pylist()[-1] == "r599"
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("context", [5, "Aspirin inhibits COX.", {"text": "Aspirin inhibits COX."}, True])
def test_a_context_that_is_not_a_list_of_passages_is_rejected_not_split_into_characters(context):
    from client import requests
    from client.errors import VerifierError

    with pytest.raises(VerifierError) as info:
        requests.chain_request({"reasoning": "Aspirin helps.", "context": context})
    assert info.value.code == "INVALID_ARGUMENT" and "context" in info.value.message
    assert "list" in info.value.message


def test_rows_whose_context_is_not_a_list_get_their_own_error_records(tmp_path, capsys):
    source, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": "n", "reasoning": "x", "context": 5}, {"id": "s", "reasoning": "x", "context": "Aspirin."},
            {"id": "d", "reasoning": "x", "context": {"text": "Aspirin."}}]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert _batch("--input", source, "--output", out) == 0, capsys.readouterr().err
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == ["d", "n", "s"]
    for record in records.values():
        assert record["status"]["code"] == "INVALID_ARGUMENT" and "context" in record["status"]["message"]


class AlwaysUnavailable:
    target = "fake:1"

    async def stream_chains(self, items):
        from client.errors import VerifierError

        async for item_id, _request in items:
            yield item_id, VerifierError("UNAVAILABLE", "BACKEND_DOWN", "the judge is down")


class FullJournal:
    """A writer whose journal cannot take another record."""

    def __init__(self):
        from client.batch import BatchSummary

        self.summary, self.calls = BatchSummary(), 0

    def put(self, position, record):
        from client.batch import JournalError

        self.calls += 1
        raise JournalError("cannot write out.jsonl (No space left on device); 0 rows written to out.jsonl; run the "
                           "same command again to resume")


def test_a_journal_that_fails_on_the_error_record_of_a_row_out_of_retries_ends_the_run(tmp_path, monkeypatch):
    from pathlib import Path

    from client import batch

    monkeypatch.setattr(batch, "OVERLOAD_PATIENCE_S", 0.0)  # no waiting out the outage: the attempts run out

    opts = batch.BatchOptions(input=Path("in.jsonl"), output=tmp_path / "out.jsonl", max_attempts=2, progress=False)
    writer = FullJournal()
    items = [batch.Item(position=0, id="c0", request=None, extra={})]
    with pytest.raises(batch.JournalError, match="No space left on device"):
        # (the error record is written by the retry's own task, outside any stream: the run must still end)
        asyncio.run(asyncio.wait_for(batch._Scheduler(opts, items, writer).run([AlwaysUnavailable()]), 20))
    assert writer.calls == 1


def test_the_census_asks_a_server_for_what_any_row_needs_as_the_rows_themselves_would(tmp_path):
    import itertools

    from client import batch
    from client.readiness import scoring_services, serving_needed, uses_knowledge_base

    kinds = {"ki_own_context": {"reasoning": "x", "context": ["Aspirin."]},  # KI only (no answer), no KB
             "both_kb": {"reasoning": "x", "answer": "A"},  # KI against the KB, and InfoGain
             "both_context": {"reasoning": "x", "answer": "A", "context": ["Aspirin."]}}
    for metrics in (("ki",), ("infogain",), ("ki", "infogain")):
        for order in itertools.permutations(kinds, 2):
            source = tmp_path / "rows.jsonl"
            source.write_text("".join(json.dumps({"id": f"{name}-{i}", **kinds[name]}) + "\n"
                                      for name in order for i in range(3)))
            opts = batch.check_options(batch.BatchOptions(input=source, output=tmp_path / "o.jsonl", metrics=metrics))
            journal = batch.Journal(tmp_path / "o.jsonl")
            census = batch._Census()
            every = []
            for _, planned in batch.plan_items(opts, journal, batch.BatchSummary()):
                census.add(planned)
                every.append(planned.request)
            journal.close(discard_if_empty=True)
            assert len(census.requests) <= 3 and census.items == len(every) == 6
            assert batch._services(census) == scoring_services(every), (metrics, order)
            assert serving_needed(census.requests) == serving_needed(every), (metrics, order)
            assert any(map(uses_knowledge_base, census.requests)) == any(map(uses_knowledge_base, every))
            assert census.kb_rows == sum(map(uses_knowledge_base, every))


def test_an_input_that_is_a_pipe_is_refused_as_such_not_as_missing(tmp_path, capsys):
    import os

    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)  # e.g. --input <(zcat rows.jsonl.gz)
    assert _batch("--input", fifo, "--output", tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "does not exist" not in err and "not a regular file" in err and "pipe" in err
