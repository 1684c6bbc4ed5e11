"""`kgverify batch` against a real server: the dataset is read as rows are sent, never held whole, with every
row still written once (in input order with --keep-order)."""

import asyncio
import json

import pytest

from client import batch
from client.batch import BatchOptions, run_batch
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server whose fakes answer at once)

ROWS = 120


def _rows(n):
    for i in range(n):
        row = {"id": f"row-{i:03d}", "question": f"Question {i}?", "group": f"g{i % 2}",
               "steps": [f"Consider case {i}.", "Aspirin irreversibly inhibits cyclooxygenase.", "So A."],
               "answer": "A"}
        if i % 10 == 3:
            row["steps"] = "not a list"  # a row that gets its error record without being sent
        yield row


class Reads:
    """Counts the rows each pass over the input has read (client.batch.read_rows, wrapped)."""

    def __init__(self, monkeypatch):
        self.passes: list[int] = []
        original = batch.read_rows

        def counting(*args, **kwargs):
            self.passes.append(0)
            index = len(self.passes) - 1
            for row in original(*args, **kwargs):
                self.passes[index] += 1
                yield row

        monkeypatch.setattr(batch, "read_rows", counting)


@pytest.mark.parametrize("keep_order", [False, True])
async def test_rows_are_read_as_they_are_sent_not_all_before_the_first_is_written(fast_server, tmp_path,
                                                                                  monkeypatch, keep_order):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(ROWS)))
    reads = Reads(monkeypatch)
    ahead: list[int] = []  # at each record written: rows read so far by the pass that sends them, minus records
    original_write = batch.Journal.write

    def write(self, record, line=None):
        ahead.append(reads.passes[-1] - summary.written)
        original_write(self, record, line)

    monkeypatch.setattr(batch.Journal, "write", write)
    monkeypatch.setattr(batch, "REORDER_LIMIT", 8, raising=False)  # records held for an earlier row (--keep-order)
    concurrency = 4
    summary = batch.BatchSummary()
    opts = BatchOptions(input=source, output=out, servers=[fast_server.addresses[0]], concurrency=concurrency,
                        keep_order=keep_order, progress=False)
    await run_batch(opts, summary=summary)

    # Held at any time: the rows in flight (one finishing), and with --keep-order the records that wait for them.
    assert ahead and max(ahead) <= concurrency + 1 + (8 if keep_order else 0), ahead[:10]
    assert reads.passes == [ROWS, ROWS]  # a first pass counts and checks the rows before anything is sent
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert sorted(ids) == [f"row-{i:03d}" for i in range(ROWS)] and summary.written == ROWS
    if keep_order:
        assert ids == sorted(ids)
    errors = {r["id"] for r in records if isinstance(r["status"], dict)}
    assert errors == {f"row-{i:03d}" for i in range(ROWS) if i % 10 == 3}
    assert summary.statuses.get("ok", 0) + summary.statuses.get("partial", 0) == ROWS - len(errors)


async def test_a_resumed_run_reads_only_what_it_sends_and_skips_the_rows_written(fast_server, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    rows = list(_rows(40))
    source.write_text("".join(json.dumps(r) + "\n" for r in rows[:25]))
    opts = BatchOptions(input=source, output=out, servers=[fast_server.addresses[0]], concurrency=3, progress=False)
    first = await run_batch(opts)
    assert first.written == 25
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))  # the dataset grew: 15 more rows
    second = await run_batch(opts)
    assert (second.total, second.skipped, second.written) == (40, 25, 15)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows) and len(ids) == len(set(ids))


async def test_an_input_that_breaks_off_while_it_is_sent_ends_the_run_with_the_rows_written_kept(fast_server,
                                                                                                tmp_path,
                                                                                                monkeypatch):
    from client.batch_io import InputError

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(30)))
    passes = []
    original = batch.read_rows

    def breaks_on_the_second_pass(*args, **kwargs):
        passes.append(1)
        for number, row in enumerate(original(*args, **kwargs)):
            if len(passes) == 2 and number == 12:  # e.g. a .gz replaced by a partial download since the first pass
                raise InputError(f"{source}: cannot be read after line 12 (cut off)")
            yield row

    monkeypatch.setattr(batch, "read_rows", breaks_on_the_second_pass)
    opts = BatchOptions(input=source, output=out, servers=[fast_server.addresses[0]], concurrency=2, progress=False)
    summary = batch.BatchSummary()
    with pytest.raises(batch.BatchError) as info:
        await run_batch(opts, summary=summary)
    assert info.value.exit_code == 1
    assert "after line 12" in str(info.value) and "run the same command again to resume" in str(info.value)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == summary.written and 12 - 2 <= summary.written <= 12  # (rows in flight: the next run)
    assert len({r["id"] for r in records}) == len(records)

    monkeypatch.setattr(batch, "read_rows", original)  # the input whole again: the same command resumes
    again = await run_batch(opts)
    assert again.skipped == summary.written and again.written == 30 - summary.written
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"row-{i:03d}" for i in range(30)]


def _journal_limit(limit_bytes):
    """preexec_fn: the child may write files of at most limit_bytes (as on a disk that fills up: a write is cut
    short at the limit, then fails with EFBIG)."""

    def limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    return limit


async def test_a_journal_that_cannot_grow_stops_the_run_naming_it_and_leaves_no_torn_record(fast_server, tmp_path):
    import asyncio
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    args = [sys.executable, "-m", "client.cli", "batch", "--no-progress", "--input", str(source), "--output",
            str(out), "--server", fast_server.addresses[0], "--concurrency", "2", "--metrics", "ki"]
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_journal_limit(40_000))
    _, stderr = await asyncio.to_thread(process.communicate, timeout=300)
    last = stderr.decode().strip().splitlines()[-1]
    assert process.returncode == 1, stderr.decode()
    assert last.startswith(f"batch failed: cannot write {out}") and "File too large" in last, last
    assert "run the same command again to resume" in last and "every server failed" not in last
    data = out.read_bytes()
    assert data and data.endswith(b"\n")  # the record cut short was taken back
    written = [json.loads(line) for line in data.decode().splitlines()]
    assert f"{len(written)} rows written" in last

    again = await asyncio.to_thread(subprocess.run, args, cwd=REPO, env=env, capture_output=True,
                                    timeout=300)  # room again (the server runs on this event loop): it resumes
    assert again.returncode == 0, again.stderr.decode()
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == [f"row-{i:03d}" for i in range(60)]


async def test_rows_a_busy_server_sheds_wait_their_turn_instead_of_becoming_errors(cache_dir, demo_kb_path,
                                                                                   monkeypatch, tmp_path):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge(delay_s=0.5))
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    # The server takes 2 rows at a time and sheds the rest (RESOURCE_EXHAUSTED / OVERLOADED). A stream alone runs
    # at most what the server admits, so two runs at once (each sending 8) make it busy.
    server = await start_server(make_settings(cache_dir, server={"max_inflight": 2}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        runs = [(tmp_path / f"in{k}.jsonl", tmp_path / f"out{k}.jsonl") for k in range(2)]
        for source, _ in runs:
            source.write_text("".join(json.dumps({"id": f"r{i}", "reasoning": "Aspirin inhibits COX.",
                                                  "context": ["Aspirin irreversibly inhibits cyclooxygenase."]}) + "\n"
                                      for i in range(12)))
        summaries = await asyncio.gather(*(run_batch(BatchOptions(
            input=source, output=out, servers=[server.addresses[0]], concurrency=8, metrics=("ki",), progress=False))
            for source, out in runs))
    finally:
        await server.stop(0)
    assert [s.statuses for s in summaries] == [{"ok": 12}, {"ok": 12}], [s.statuses for s in summaries]
    assert server.runtime.admission.shed > 0  # (rows were shed, and sent again until taken)


async def test_rows_refused_during_a_backend_outage_are_sent_again_when_it_recovers(cache_dir, demo_kb_path,
                                                                                    monkeypatch, tmp_path):
    # The judge's backend goes down mid-run for longer than a row's six quick attempts take (~4 s): the rows
    # answered UNAVAILABLE (BACKEND_UNAVAILABLE) meanwhile wait for it instead of becoming error records.
    judge = FakeJudge(delay_s=0.05)
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        source.write_text("".join(json.dumps({"id": f"r{i}", "reasoning": f"Aspirin {i} inhibits COX.",
                                              "context": ["Aspirin irreversibly inhibits cyclooxygenase."]}) + "\n"
                                  for i in range(40)))
        run = asyncio.ensure_future(run_batch(BatchOptions(input=source, output=out, servers=[server.addresses[0]],
                                                           concurrency=4, metrics=("ki",), progress=False)))
        while judge.calls < 5:
            await asyncio.sleep(0.01)
        judge.down = True
        refused = judge.calls
        await asyncio.sleep(8)
        assert judge.calls > refused + 4  # rows were refused during the outage (and sent again)
        judge.down = False
        summary = await asyncio.wait_for(run, 120)
    finally:
        await server.stop(0)
    assert summary.statuses == {"ok": 40}, summary.statuses
