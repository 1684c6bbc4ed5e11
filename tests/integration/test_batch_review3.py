"""`kgverify batch` against a real server: a row that breaks its stream every time it is sent is found, named and
recorded as failed; the server's RetryInfo paces the rows it sheds; records carry the InfoGain units."""

import asyncio
import json

from client import aio
from client.cli import main
from tests.integration.test_batch_resume import fast_server  # noqa: F401  (a real server with instant models)

FACT = "Protamine sulfate neutralizes heparin."
RECEIVE_LIMIT = 32 * 1024


def _row(i, steps=None):
    return {"id": f"r{i}", "question": "Which drug reverses heparin?", "steps": steps or [FACT], "answer": "A"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _batch(address, source, out, *args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", "--input", str(source), "--output", str(out),
                                          "--server", address, *map(str, args)])


async def test_a_row_whose_result_breaks_the_stream_gets_its_own_record_naming_it(fast_server, tmp_path,  # noqa: F811
                                                                                 monkeypatch, capsys, caplog):
    # The client takes messages of at most 32 KiB: the result of the long row (its steps, claims and evidence
    # text) is larger, so every stream it is answered on breaks (RESOURCE_EXHAUSTED, the row's id lost with it).
    real = aio.channel_options
    monkeypatch.setattr(aio, "channel_options", lambda limit=aio.DEFAULT_MAX_MESSAGE_BYTES: [
        (k, RECEIVE_LIMIT if k == "grpc.max_receive_message_length" else v) for k, v in real(limit)])
    long_steps = [f"Step {i} notes that " + "heparin " * 180 + "is reversed" for i in range(12)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, [_row(0), _row(1), _row(2), _row(3, long_steps), *(_row(i) for i in range(4, 10))])
    code = await _batch(fast_server.addresses[0], source, out, "--concurrency", "4", "--metrics", "ki")
    err = capsys.readouterr().err
    assert code == 0, err
    records = {r["id"]: r for r in _records(out)}
    assert sorted(records) == sorted(f"r{i}" for i in range(10))
    assert all(records[f"r{i}"]["status"] == "ok" for i in range(10) if i != 3)
    status = records["r3"]["status"]
    assert status["code"] == "RESOURCE_EXHAUSTED" and "Received message larger than max" in status["message"]
    assert "line 4" in status["message"], status
    assert any("'r3' (line 4)" in m for m in caplog.messages), caplog.messages  # (stderr without logging set up)
    # A resumed run does not send it again; --retry-errors does (and records it failed again).
    assert await _batch(fast_server.addresses[0], source, out, "--metrics", "ki") == 0
    assert len(_records(out)) == 10


async def test_rows_shed_by_a_busy_server_wait_the_delay_its_retry_info_asks_for(cache_dir, demo_kb_path, tmp_path,
                                                                                   monkeypatch):
    from client import batch
    from server.app import start_server
    from server.backends import registry
    from tests.conftest import make_settings
    from tests.fakes.backends import FakeJudge

    judge = FakeJudge()
    judge.delay_s = 0.05
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, server={"max_inflight": 2}), ["127.0.0.1:0"])
    server.runtime.admission.retry_after_s = 1.5  # (its default, 0.2 s, is within the client's own backoff)
    pauses = []

    def recording(error, *args, **kwargs):
        pause = real(error, *args, **kwargs)
        pauses.append((error.reason, error.retry_delay_s, pause))
        return pause

    real = batch.retry_pause_s
    monkeypatch.setattr(batch, "retry_pause_s", recording)
    try:
        await server.wait_ready(300)
        # Two runs at once: the server admits 2 items, and each stream runs at most that many (a stream alone is
        # not shed by its own items), so the two together are.
        runs = [(tmp_path / f"in{k}.jsonl", tmp_path / f"out{k}.jsonl") for k in range(2)]
        for source, _ in runs:
            _write(source, [_row(i) for i in range(6)])
        codes = await asyncio.gather(*(_batch(server.addresses[0], source, out, "--concurrency", "6", "--metrics",
                                              "ki") for source, out in runs))
        assert codes == [0, 0]
    finally:
        await server.stop(0)
    for _, out in runs:
        assert sorted(r["id"] for r in _records(out) if r["status"] == "ok") == [f"r{i}" for i in range(6)]
    shed = [p for p in pauses if p[0] == "OVERLOADED"]
    assert shed, pauses
    assert all(delay == 1.5 and 1.5 <= pause <= 5.0 for _, delay, pause in shed), shed



async def test_records_carry_their_info_gain_units_and_report_refuses_to_mix_them(fast_server, tmp_path,  # noqa: F811
                                                                                 capsys):
    source = tmp_path / "in.jsonl"
    _write(source, [_row(i) for i in range(3)])
    journals = {}
    for units in ("nats", "bits"):
        journals[units] = tmp_path / f"{units}.jsonl"
        assert await _batch(fast_server.addresses[0], source, journals[units], "--units", units) == 0
        assert {r["units"] for r in _records(journals[units])} == {units}
    capsys.readouterr()
    assert main(["report", str(journals["nats"]), str(journals["bits"]), "--by", "file"]) == 2
    err = capsys.readouterr().err
    assert "different units" in err and "nats" in err and "bits" in err, err
    # A journal of an older version (no units in its records) still reports beside either.
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "units"}) + "\n"
                           for r in _records(journals["bits"])))
    stats = tmp_path / "stats.json"
    assert main(["report", str(journals["nats"]), str(old), "--by", "file", "--json", str(stats)]) == 0
    assert json.loads(stats.read_text())["info_gain_units"] == "nats"  # (also the plots' axis label)
    assert main(["report", str(old), "--json", str(stats)]) == 0
    assert json.loads(stats.read_text())["info_gain_units"] is None


async def test_the_blocking_clients_stream_raises_the_error_its_items_raised(fast_server):  # noqa: F811
    from client import requests
    from client.sync import VerifierClient

    request = requests.score_chain_request({"question": "Which drug reverses heparin?", "steps": [FACT],
                                            "answer": "Protamine", "metrics": ("ki",)})

    def items():
        yield "a", request
        raise LookupError("row 2 of the caller's dataset cannot be read")

    def stream():
        with VerifierClient(fast_server.addresses[0]) as client:
            try:
                return list(client.stream_chains(items()))
            except Exception as exc:  # noqa: BLE001
                return exc

    raised = await asyncio.to_thread(stream)
    assert isinstance(raised, LookupError) and "row 2" in str(raised), raised


async def test_an_embedded_server_that_does_not_load_in_time_says_so(cache_dir, demo_kb_path):
    import pytest

    from client.embedded import EmbeddedServerError, embedded_server
    from tests.conftest import make_settings

    with pytest.raises(EmbeddedServerError, match="did not finish loading within 0.001 s"):
        async with embedded_server(make_settings(cache_dir), load_timeout_s=0.001):
            pass


async def test_a_call_shed_by_a_busy_server_is_retried_after_the_delay_it_asks_for(cache_dir, demo_kb_path,
                                                                                     monkeypatch):
    from client.aio import AsyncVerifierClient
    from server.app import start_server
    from server.backends import registry
    from tests.conftest import make_settings
    from tests.fakes.backends import FakeJudge

    judge = FakeJudge(gate=asyncio.Event())
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, server={"max_inflight": 1}), ["127.0.0.1:0"])
    admission = server.runtime.admission
    admission.retry_after_s = 1.0
    row = {"question": "Which drug reverses heparin?", "steps": [FACT], "metrics": ("ki",)}
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], timeout_s=60) as client:
            first = asyncio.ensure_future(client.score_chain(**row))
            while not judge.waiting:  # the first call holds the server's only slot
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(client.score_chain(**row))
            while not admission.shed:  # the second was refused (OVERLOADED, retry after 1 s)
                await asyncio.sleep(0.01)
            judge.gate.set()
            assert (await first).status == "ok"
            assert (await second).status == "ok"  # sent again once the server asked for it
    finally:
        await server.stop(0)
