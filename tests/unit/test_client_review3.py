"""The client's errors and batch scheduler: the server's RetryInfo is read; a row that breaks every stream it is
sent on is named when the run stops."""

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from client.aio import retry_pause_s
from client.batch import BatchError, BatchOptions, BatchSummary, Item, _Scheduler
from client.cli import main
from client.errors import VerifierError
from client.report import ReportOptions, run_report
from server.errors import error_status
from server.pipeline.errors import BackendUnavailableError, OverloadedError


def test_the_retry_delay_of_the_servers_status_is_read_and_waited_at_least():
    error = VerifierError.from_status(error_status(OverloadedError("busy", retry_after_s=1.25)))
    assert (error.code, error.reason, error.retry_delay_s) == ("RESOURCE_EXHAUSTED", "OVERLOADED", 1.25)
    assert all(1.25 <= retry_pause_s(error, 0.1) <= 1.5 for _ in range(50))
    assert retry_pause_s(error, 1.9) == 1.9  # (a longer backoff stands)
    assert retry_pause_s(VerifierError.from_status(error_status(OverloadedError("busy", retry_after_s=60))), 0.1,
                         cap_s=2.0) == 2.0  # never longer than the client's own limit
    assert VerifierError.from_status(error_status(BackendUnavailableError("down"))).retry_delay_s is None


class Collect:
    """Stands in for the journal writer: what was finished, by position."""

    def __init__(self):
        self.records: dict[int, dict] = {}
        self.summary = BatchSummary()
        self.journal = SimpleNamespace(path=Path("out.jsonl"))

    def put(self, position, record):
        self.records[position] = record


class CrashesOn:
    """A server that goes away (UNAVAILABLE) whenever it is sent one row, and scores the others."""

    target = "fake:1"

    def __init__(self, poison):
        self.poison = poison

    async def stream_chains(self, items):
        async for item_id, request in items:
            if request == self.poison:
                raise VerifierError("UNAVAILABLE", "UNAVAILABLE", "Socket closed")
            yield item_id, VerifierError("INVALID_ARGUMENT", "TEST", "scored")


def test_a_run_stopped_by_a_row_that_crashes_the_server_names_the_row(monkeypatch):
    monkeypatch.setattr("client.batch.backoff_s", lambda *args, **kwargs: 0.0)
    items = [Item(position=i, id=f"c{i}", request=f"request {i}", extra={}, label=f"line-{i + 1}") for i in range(6)]
    writer = Collect()
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), concurrency=4, progress=False)
    with pytest.raises(BatchError) as caught:
        asyncio.run(asyncio.wait_for(_Scheduler(opts, items, writer).run([CrashesOn("request 2")]), 20))
    assert "row 'c2', line 3, was the only row in flight" in str(caught.value), caught.value
    assert 2 not in writer.records


def _journal(path, rows=4):
    records = [{"id": f"r{i}", "status": "ok", "group": "g", "knowledge_index": 0.5, "info_gain": 0.1 * i,
                "steps": [], "counts": {"supported": 1}} for i in range(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_report_leaves_another_writers_temporary_file_alone_and_syncs_what_it_writes(tmp_path, monkeypatch):
    journal, out = _journal(tmp_path / "scores.jsonl"), tmp_path / "stats.json"
    other = tmp_path / ".stats.json.tmp"  # a concurrent report writing the same file, midway
    other.write_bytes(b"half of another report")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    run_report(ReportOptions(inputs=[journal], json_out=out, samples=10))
    assert other.read_bytes() == b"half of another report"
    assert json.loads(out.read_text())["groups"]["g"]["n"] == 4
    assert synced  # the file is on disk before it replaces the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stats.json.tmp", "scores.jsonl", "stats.json"]


def test_a_report_that_cannot_be_written_leaves_no_temporary_file(tmp_path, monkeypatch):
    journal, out = _journal(tmp_path / "scores.jsonl"), tmp_path / "stats.json"

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        run_report(ReportOptions(inputs=[journal], json_out=out, samples=10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


def test_json_and_html_to_one_file_are_refused_before_anything_is_written(tmp_path, capsys):
    journal, out = _journal(tmp_path / "scores.jsonl"), tmp_path / "out"
    assert main(["report", str(journal), "--json", str(out), "--html", str(tmp_path / "." / "out")]) == 2
    assert "--json and --html are the same file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.jsonl"]


@pytest.mark.parametrize("export", ["out.csv", "./sub/../out.csv"])
def test_an_export_naming_the_journal_not_yet_written_is_refused(tmp_path, monkeypatch, export):
    from client.batch import BatchStopped, check_options

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "question": "Q?", "reasoning": "R.", "answer": "A"}) + "\n")
    with pytest.raises(BatchStopped, match="is the --output journal"):
        check_options(BatchOptions(input=source, output=tmp_path / "out.csv", export=[Path(export)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "sub"]


def test_a_server_that_cannot_be_reached_blames_no_row(monkeypatch):
    import socket

    from client import requests
    from client.aio import AsyncVerifierClient

    monkeypatch.setattr("client.batch.backoff_s", lambda *args, **kwargs: 0.0)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    request = requests.score_chain_request({"question": "Q?", "steps": ["S."], "answer": "A", "metrics": ("ki",)})
    items = [Item(position=i, id=f"c{i}", request=request, extra={}, label=f"line-{i + 1}") for i in range(6)]
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), concurrency=4, progress=False)

    async def run():
        async with AsyncVerifierClient(address) as client:
            await asyncio.wait_for(_Scheduler(opts, items, Collect()).run([client]), 60)

    with pytest.raises(BatchError, match="keeps failing") as caught:
        asyncio.run(run())
    assert "in flight" not in str(caught.value), caught.value


def test_a_tab_separated_file_read_as_csv_is_refused_as_tsv(tmp_path):
    from client.batch_io import InputError, check_input

    source = tmp_path / "rows.csv"  # (or --input-format csv)
    source.write_text('id\tquestion\treasoning\na\tHe said "no" to it\tR.\n')
    with pytest.raises(InputError, match="tab-separated"):
        check_input(source)


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_an_fsync_interval_that_is_not_a_number_of_seconds_is_refused(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exited:
        main(["batch", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
              "--fsync-interval", value])
    assert exited.value.code == 2 and "--fsync-interval" in capsys.readouterr().err


def test_a_context_passage_with_id_zero_keeps_its_id():
    from client.requests import passages

    got = passages([{"id": 0, "text": "Aspirin inhibits COX.", "source": 0}, {"text": "Warfarin", "id": None}])
    assert [(p.id, p.source) for p in got] == [("0", "0"), ("", "")]
