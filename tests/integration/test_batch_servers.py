"""`kgverify batch` with several --server addresses: work is balanced, and a server that dies loses no row."""

import asyncio
import json

import pytest

from client.batch import BatchOptions, run_batch
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

ROWS = 80


@pytest.fixture
async def two_servers(cache_dir, demo_kb_path, monkeypatch):
    """Two real servers, each with its own slow-ish fake judge (so the run lasts long enough to interfere)."""
    judges: list[FakeJudge] = []

    def judge_factory(ctx):
        judges.append(FakeJudge(delay_s=0.05))
        return judges[-1]

    monkeypatch.setitem(registry.JUDGES, "nli", judge_factory)
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    servers = []
    try:
        for _ in range(2):
            servers.append(await start_server(make_settings(cache_dir), ["127.0.0.1:0"]))
        await asyncio.gather(*(s.wait_ready(300) for s in servers))
        yield servers, judges
    finally:
        await asyncio.gather(*(s.stop(0) for s in servers))


def _write_rows(path):
    rows = [{"id": f"c{i}", "question": "Which drug reverses heparin?",
             "steps": [f"Case {i}.", "Protamine sulfate neutralizes heparin."], "answer": "Protamine"}
            for i in range(ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_rows_are_balanced_over_two_servers(two_servers, tmp_path):
    servers, judges = two_servers
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_rows(source)
    opts = BatchOptions(input=source, output=out, servers=[s.addresses[0] for s in servers], concurrency=8,
                        progress=False)
    summary = await run_batch(opts)
    assert summary.written == ROWS and summary.statuses == {"ok": ROWS}
    assert len(judges) == 2 and all(j.calls > 0 for j in judges)
    # Equal windows per server: neither takes much more than its share.
    assert min(j.calls for j in judges) >= ROWS // 4
    assert sorted(r["id"] for r in _records(out)) == sorted(f"c{i}" for i in range(ROWS))


async def test_a_server_dying_midway_loses_and_duplicates_no_row(two_servers, tmp_path):
    servers, judges = two_servers
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write_rows(source)
    opts = BatchOptions(input=source, output=out, servers=[s.addresses[0] for s in servers], concurrency=8,
                        progress=False, keep_order=True)
    run = asyncio.ensure_future(run_batch(opts))
    while not out.exists() or out.read_bytes().count(b"\n") < 10:
        assert not run.done(), "the batch ended before a server could be stopped"
        await asyncio.sleep(0.01)
    await servers[1].stop(0)  # in-flight items on its stream go back to the queue
    summary = await asyncio.wait_for(run, 120)
    assert summary.written == ROWS and summary.statuses == {"ok": ROWS}
    ids = [r["id"] for r in _records(out)]
    assert ids == [f"c{i}" for i in range(ROWS)]  # --keep-order, each row exactly once
