"""Run-wide failures of `kgverify batch` stop the run with the reason instead of becoming one error per row;
early exits (Ctrl-C, a consumer that stops reading a stream) leave nothing running and say how to resume."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from client.aio import AsyncVerifierClient
from client.cli import main
from client.requests import chain_request
from server.app import start_server
from server.backends import registry
from tests.conftest import REPO, make_settings, takes_ctrl_c
from tests.fakes.backends import FakeEstimator, FakeJudge

FACT = "Protamine sulfate neutralizes heparin."


def _rows(n, **fields):
    return [{"id": f"r{i:03d}", "question": f"Question {i}: which drug reverses heparin?",
             "steps": [f"Consider case {i}.", FACT], "answer": "Protamine", **fields} for i in range(n)]


def _write(path, rows):
    path.write_bytes(b"".join(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode() for r in rows))


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _batch(*args):
    return await asyncio.to_thread(main, ["batch", "--no-progress", *map(str, args)])


async def _server(cache_dir, monkeypatch, judge, **sections):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    return await start_server(make_settings(cache_dir, **sections), ["127.0.0.1:0"])


@pytest.fixture
async def fake_server(cache_dir, demo_kb_path, monkeypatch):
    """A real server (demo KB, real retrieval) whose judge and InfoGain estimator answer at once."""
    judge = FakeJudge()
    server = await _server(cache_dir, monkeypatch, judge)
    await server.wait_ready(300)
    yield server, judge
    await server.stop(0)


@pytest.fixture
async def no_kb_server(cache_dir, monkeypatch):
    """A real server run without a knowledge base (context-only KI), fake judge and estimator."""
    server = await _server(cache_dir, monkeypatch, FakeJudge(), kb={"enabled": False})
    await server.wait_ready(300)
    yield server
    await server.stop(0)


def _refused_address():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def test_batch_and_evaluate_fail_fast_when_nothing_listens_at_the_address(tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, _rows(2))
    address = _refused_address()
    assert await _batch("--input", source, "--output", out, "--server", address) == 2
    assert f"cannot reach the kgverify server at {address} (connection refused)" in capsys.readouterr().err
    assert not out.exists()  # a run that wrote nothing leaves no empty journal

    evaluate = ["evaluate", "--question", "q", "--reasoning", FACT, "--answer", "a", "--server", address]
    assert await asyncio.to_thread(main, evaluate) == 2
    assert f"cannot reach the kgverify server at {address} (connection refused)" in capsys.readouterr().err


async def test_batch_says_it_waits_for_a_server_that_is_reachable_but_not_ready(cache_dir, demo_kb_path,
                                                                                  monkeypatch, tmp_path, capsys):
    judge = FakeJudge(down=True)  # the knowledge service stays NOT_SERVING until its backend is up
    server = await _server(cache_dir, monkeypatch, judge)
    try:
        await server.wait_ready(300)
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        _write(source, _rows(3))
        run = asyncio.ensure_future(_batch("--input", source, "--output", out, "--server", server.addresses[0]))
        err = ""
        while "waiting for the server at" not in err:
            assert not run.done(), f"the batch ended while the server was not ready: {err}"
            await asyncio.sleep(0.05)
            err += capsys.readouterr().err
        assert f"waiting for the server at {server.addresses[0]} to become ready" in err
        judge.down = False  # the backend comes up: the health monitor turns the service SERVING
        assert await asyncio.wait_for(run, 120) == 0
    finally:
        await server.stop(0)
    assert [r["status"] for r in _records(out)] == ["ok"] * 3


async def test_batch_stops_at_once_when_the_servers_kb_failed_to_load(cache_dir, demo_kb_path, monkeypatch,
                                                                       tmp_path, capsys):
    from kb.knowledge_base import FaissKnowledgeBase

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "kb" / "index.faiss"))

    monkeypatch.setattr(FaissKnowledgeBase, "load", unreadable)
    server = await _server(cache_dir, monkeypatch, FakeJudge(), kb={"path": tmp_path / "kb"})
    try:
        await server.wait_ready(300)
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        _write(source, [*_rows(3), b"not json\n"])
        assert await _batch("--input", source, "--output", out, "--server", server.addresses[0]) == 2
    finally:
        await server.stop(0)
    err = capsys.readouterr().err
    assert "SERVICE_LOAD_FAILED" in err and server.addresses[0] in err
    assert not out.exists()  # not one error record: neither the rows' nor the unreadable line's


async def test_batch_against_a_server_without_kb_stops_only_when_no_row_has_context(no_kb_server, tmp_path,
                                                                                    capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, _rows(3))
    assert await _batch("--input", source, "--output", out, "--server", no_kb_server.addresses[0]) == 2
    assert "KB_NOT_LOADED" in capsys.readouterr().err and not out.exists()

    _write(source, [*_rows(2), *_rows(1, context=[FACT], id="with-context")])
    assert await _batch("--input", source, "--output", out, "--server", no_kb_server.addresses[0]) == 0
    assert "2 of 3 rows without context passages will get KB_NOT_LOADED" in capsys.readouterr().err
    statuses = {r["id"]: r["status"] for r in _records(out)}
    assert statuses["with-context"] == "ok" and statuses["r000"]["reason"] == "KB_NOT_LOADED"


async def test_a_run_whose_first_results_all_fail_alike_stops_and_keeps_what_it_wrote(no_kb_server, tmp_path,
                                                                                      capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, _rows(30, context=[FACT]))
    # No causal LM on this server: every row would get FAILED_PRECONDITION BACKEND_NOT_CONFIGURED.
    assert await _batch("--input", source, "--output", out, "--server", no_kb_server.addresses[0],
                        "--estimator", "lm") == 2
    err = capsys.readouterr().err
    assert "the first 20 rows all failed with FAILED_PRECONDITION [BACKEND_NOT_CONFIGURED]" in err
    assert "--retry-errors" in err and f"20 records written to {out} stay" in err
    records = _records(out)
    assert len(records) == 20 and all(r["status"]["reason"] == "BACKEND_NOT_CONFIGURED" for r in records)

    # Fixed (the nli estimator): --retry-errors scores those rows and the rest.
    assert await _batch("--input", source, "--output", out, "--server", no_kb_server.addresses[0],
                        "--retry-errors") == 0
    from client.batch_io import journal_records

    assert sorted(r["status"] for r in journal_records(out)) == ["ok"] * 30


async def test_a_row_that_is_not_utf8_gets_its_own_record(fake_server, tmp_path):
    server, _ = fake_server
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = _rows(2)
    bad = json.dumps({"id": "latin1", "question": "q", "reasoning": "caf\u00e9", "answer": "a"}).encode()
    _write(source, [good[0], bad.replace(b"\\u00e9", b"\xe9") + b"\n", good[1]])
    assert await _batch("--input", source, "--output", out, "--server", server.addresses[0], "--keep-order") == 0
    records = _records(out)
    assert [r["id"] for r in records] == ["r000", "latin1", "r001"]
    assert records[0]["status"] == records[2]["status"] == "ok"
    status = records[1]["status"]
    assert status["code"] == "INVALID_ARGUMENT" and status["reason"] == "INVALID_UTF8"
    assert "line 2" in status["message"] and "0xe9" in status["message"]


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_or_sigterm_says_how_many_rows_were_written_and_the_resumed_run_says_how_many_it_skips(
        cache_dir, demo_kb_path, monkeypatch, tmp_path, sig):
    server = await _server(cache_dir, monkeypatch, FakeJudge(delay_s=0.05))
    try:
        await server.wait_ready(300)
        source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        _write(source, _rows(200))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
        args = [sys.executable, "-m", "client.cli", "batch", "--input", source, "--output", out,
                "--server", server.addresses[0], "--concurrency", "2"]
        first = subprocess.Popen([*map(str, args), "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, preexec_fn=takes_ctrl_c)
        try:
            while _lines(out) < 10 and first.poll() is None:
                await asyncio.sleep(0.01)  # the server under test runs on this event loop
            assert first.poll() is None, "the batch ended before the signal: " + first.stderr.read().decode()
            first.send_signal(sig)
            _, stderr = await asyncio.to_thread(first.communicate, timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 130, stderr.decode()
        written = _lines(out)
        assert 10 <= written < 200
        assert stderr.decode().strip().splitlines()[-1] == (
            f"interrupted: {written} rows written to {out}; run the same command again to resume")

        second = await asyncio.to_thread(subprocess.run, list(map(str, args)), cwd=REPO, env=env,
                                         capture_output=True, timeout=300)
    finally:
        await server.stop(0)
    assert second.returncode == 0, second.stderr.decode()
    assert f"resumed: {written} rows already done" in second.stderr.decode()  # the progress bar
    assert sorted(r["id"] for r in _records(out)) == [f"r{i:03d}" for i in range(200)]


async def test_a_run_whose_every_server_fails_midway_says_what_it_wrote_and_how_to_resume(
        cache_dir, demo_kb_path, monkeypatch, tmp_path, capsys):
    server = await _server(cache_dir, monkeypatch, FakeJudge(delay_s=0.05))
    await server.wait_ready(300)
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(source, _rows(200))
    run = asyncio.ensure_future(_batch("--input", source, "--output", out, "--server", server.addresses[0],
                                       "--concurrency", "2"))
    try:
        while _lines(out) < 10:
            assert not run.done(), "the batch ended before the server was stopped"
            await asyncio.sleep(0.01)
    finally:
        await server.stop(0)  # the only server goes away for good
    assert await asyncio.wait_for(run, 120) == 1
    written = _lines(out)
    assert 10 <= written < 200
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("batch failed: every server failed: server ") and "keeps failing" in message
    assert message.endswith(f"; {written} rows written to {out}; run the same command again to resume")


def _cancelled_streams():
    return REGISTRY.get_sample_value("kgverify_rpc_duration_seconds_count",
                                     {"method": "/kgverify.v1.KnowledgeService/StreamScoreChains",
                                      "code": "CANCELLED"}) or 0.0


async def test_a_stream_the_consumer_stops_reading_is_cancelled_on_the_server(cache_dir, demo_kb_path,
                                                                              monkeypatch):
    judge = FakeJudge(delay_s=0.05)
    server = await _server(cache_dir, monkeypatch, judge, server={"max_stream_inflight": 1})
    more = asyncio.Event()  # never set: the request side stays open, as a feeder with more to send would
    try:
        await server.wait_ready(300)

        async def items():
            for row in _rows(20, context=[FACT]):
                yield row["id"], chain_request(row, ("ki",))
            await more.wait()

        cancelled = _cancelled_streams()
        async with AsyncVerifierClient(server.addresses[0]) as client:
            stream = client.stream_chains(items())
            async for _, result in stream:
                assert result.status == "ok"
                break
            await stream.aclose()
            # The server has stopped when its stream ended; had it not, it would score all 20.
            async with asyncio.timeout(120):
                while _cancelled_streams() == cancelled and judge.calls < 20:
                    await asyncio.sleep(0.01)
        assert _cancelled_streams() > cancelled
        assert judge.calls < 10, f"the server scored {judge.calls} of 20 items after the consumer stopped at 1"
    finally:
        await server.stop(0)


@pytest.mark.parametrize("command", [
    ["demo"],
    ["evaluate", "--question", "Q?", "--reasoning", "Protamine neutralizes heparin.", "--metrics", "ki"],
])
async def test_sigterm_while_an_embedded_server_runs_cleans_it_up_and_exits_130(cache_dir, command):
    # A short TMPDIR of its own: the socket goes there (a deep one, like pytest's, sends it to /tmp instead).
    scratch = Path(tempfile.mkdtemp(prefix="kgv-sig-"))
    env = {**os.environ, "TMPDIR": str(scratch), "KGV_KB__CACHE_DIR": str(cache_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    proc = subprocess.Popen([sys.executable, "-m", "client.cli", *command], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=takes_ctrl_c)
    try:
        seen = b""
        while b"starting the embedded verifier" not in seen:
            chunk = await asyncio.to_thread(proc.stderr.read1, 4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        assert [p.name for p in scratch.iterdir() if p.name.startswith("kgverify-")]  # its socket directory
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 130, proc.stderr.read().decode(errors="replace")
        assert "Traceback" not in (seen + proc.stderr.read()).decode(errors="replace")
        assert not [p.name for p in scratch.iterdir() if p.name.startswith("kgverify-")]  # removed on the way out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(scratch, ignore_errors=True)
