"""Row-level faults in `kgverify batch` against a real server: each one becomes that row's record (or is retried
until scored) and never stops the rest of the run."""

import asyncio
import json

import pytest

from client.cli import main
from server.app import start_server
from server.backends import registry
from server.pipeline.errors import BackendUnavailableError
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

FACT = "Protamine sulfate neutralizes heparin."
TRANSIENT = "TRANSIENT"  # a claim with this marker: the judge's first call for it fails (backend unavailable)


class FailsOnce(FakeJudge):
    def __init__(self):
        super().__init__()
        self.failed: set[str] = set()

    async def judge(self, items, deadline):
        for item in items:
            if TRANSIENT in item.claim and item.claim not in self.failed:
                self.failed.add(item.claim)
                raise BackendUnavailableError("injected transient failure")
        return await super().judge(items, deadline)


@pytest.fixture(scope="module")
async def server(cache_dir, demo_kb_path):
    patch = pytest.MonkeyPatch()
    judge = FailsOnce()
    patch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    patch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    started = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    started.judge = judge
    try:
        await started.wait_ready(300)
        yield started
    finally:
        await started.stop(0)
        patch.undo()


def _row(i, *steps, **fields):
    return {"id": f"r{i}", "question": "Which drug reverses heparin?", "steps": list(steps or [FACT]),
            "answer": "Protamine", **fields}


def _write(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _batch(server, source, out, *args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", "--input", str(source), "--output", str(out),
                                          "--server", server.addresses[0], *map(str, args)])


async def test_a_row_that_fails_once_is_retried_and_scored(server, tmp_path):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [_row(0), _row(1), _row(2, f"{TRANSIENT}: {FACT}"), _row(3)])
    assert await _batch(server, source, out, "--concurrency", "1") == 0
    statuses = {r["id"]: r["status"] for r in _records(out)}
    assert statuses == {f"r{i}": "ok" for i in range(4)}  # r2: UNAVAILABLE once, then scored on the same stream


def _reason(record):
    return record["status"] if isinstance(record["status"], str) else record["status"]["reason"]


async def test_rows_that_cannot_be_sent_or_journaled_get_their_own_records_and_the_rest_are_scored(
        server, tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = json.dumps(_row(0))
    lines = [
        good,
        good[:-1] + ', "id": "nan-qid", "question_id": NaN}',  # (a later key wins in JSON)
        json.dumps(_row(0, "Aspirin \ud800 inhibits COX.", id="surrogate-text")),
        json.dumps(_row(0, id="s\udc00")),
        json.dumps(_row(0, id="surrogate-group", group="g\udc00")),
        json.dumps(_row(0, id=1.0)),
        json.dumps(_row(0, id=["x"])),
        json.dumps(_row(0, id=True)),
        '{"id": "deep", "context": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps(_row(0, id="huge", reasoning=FACT * 450_000)),  # a 17 MB request: over the 16 MiB limit
        json.dumps(_row(0, id="r0#line-12")),  # a real id that looks like the key of line 12's record
        good,  # line 12 repeats r0
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    assert await _batch(server, source, out, "--keep-order") == 0
    records = _records(out)
    by_line = {r.get("input_row", r["id"]): r for r in records}
    assert _reason(by_line["r0"]) == _reason(by_line["r0#line-12"]) == "ok"
    for key, reason, words in [
            ("nan-qid", "INVALID_FIELD", "question_id (nan)"),
            ("surrogate-text", "INVALID_FIELD", "steps[0] (text with a lone surrogate) cannot be sent"),
            ("line-4", "INVALID_ID", "not valid Unicode"),
            ("surrogate-group", "INVALID_FIELD", "group (text with a lone surrogate)"),
            ("line-6", "INVALID_ID", "not float 1.0"),
            ("line-7", "INVALID_ID", "not list"),
            ("line-8", "INVALID_ID", "not bool true"),
            ("line-9", "INVALID_JSON", "nested too deeply"),
            ("huge", "REQUEST_TOO_LARGE", "16 MiB"),
            ("line-12", "DUPLICATE_ID", "appears more than once")]:
        assert _reason(by_line[key]) == reason and words in by_line[key]["status"]["message"], by_line[key]
    # The record of line 12 (a repeat of r0) is kept apart from the real row "r0#line-12".
    assert by_line["line-12"]["id"] == "r0#line-12" and by_line["r0#line-12"]["status"] == "ok"
    from client.batch_io import journal_records

    assert len(list(journal_records(out))) == len(lines)

    capsys.readouterr()
    assert await _batch(server, source, out) == 0  # a rerun finds every row done
    assert json.loads(capsys.readouterr().err.strip().splitlines()[-1])["written"] == 0


async def test_a_parquet_float_column_with_a_gap_fails_only_its_row(server, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, out = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(3)], "question": ["Q?"] * 3, "reasoning": [FACT] * 3,
                             "answer": ["A"] * 3, "question_id": [1.0, float("nan"), 3.0]}), source)
    assert await _batch(server, source, out, "--keep-order") == 0
    assert [_reason(r) for r in _records(out)] == ["ok", "INVALID_FIELD", "ok"]


class FreezingProxy:
    """Relays TCP connections to a server; freeze() stops relaying on the connections open now without closing
    them, as a server whose process or machine froze looks to its client. Later connections are relayed."""

    def __init__(self, target):
        self.host, self.port = target.rsplit(":", 1)
        self.frozen: list[asyncio.Event] = []
        self.tasks: set[asyncio.Task] = set()
        self.sockets = []

    async def start(self):
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def freeze(self):
        for event in self.frozen:
            event.set()

    async def _relay(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection(self.host, int(self.port))
        frozen = asyncio.Event()
        self.frozen.append(frozen)
        self.sockets += [writer, up_writer]

        async def pipe(source, sink):
            while data := await source.read(65536):
                if frozen.is_set():
                    await asyncio.Event().wait()  # hold the connection open, relay nothing
                sink.write(data)
                await sink.drain()

        for task in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.ensure_future(task)
            self.tasks.add(task)

    async def close(self):
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for sock in self.sockets:
            sock.close()


async def test_a_server_that_stops_answering_without_closing_the_connection_is_left_by_keepalive(
        server, tmp_path, monkeypatch):
    from client import aio

    monkeypatch.setattr(aio, "KEEPALIVE_TIME_MS", 1000)  # (the server takes pings every 10 s; it sees none here)
    monkeypatch.setattr(aio, "KEEPALIVE_TIMEOUT_MS", 1000)
    monkeypatch.setattr(server.judge, "delay_s", 0.02)
    proxy = FreezingProxy(server.addresses[0])
    address = await proxy.start()
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [_row(i) for i in range(60)])
    run = asyncio.ensure_future(asyncio.to_thread(main, [
        "batch", "--no-progress", "--input", str(source), "--output", str(out), "--server", address,
        "--concurrency", "1"]))
    try:
        while not out.exists() or out.read_bytes().count(b"\n") < 3:
            assert not run.done()
            await asyncio.sleep(0.01)
        proxy.freeze()  # the stall timeout (900 s) is far off: only keepalive can notice
        assert await asyncio.wait_for(asyncio.shield(run), 60) == 0
    finally:
        await proxy.close()
        if not run.done():
            await asyncio.wait_for(run, 60)  # (it ends once the proxy closes the connection)
    assert sorted(r["id"] for r in _records(out)) == sorted(f"r{i}" for i in range(60))
