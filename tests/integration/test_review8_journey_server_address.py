"""`split --server` and `kb reload --server` against a server that is not there, or still loading: the same one
line as evaluate and batch ("cannot reach the kgverify server at ADDR (connection refused)"), and split waits for a
loading server instead of failing NOT_READY (`kgverify serve &` then `kgverify split --server ...` failed)."""

import asyncio
import json
import socket

from client.cli import main
from server.app import Runtime, start_server
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge
from server.backends import registry


def _refused_address():
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_split_and_reload_name_an_unreachable_server_in_a_few_words(capsys):
    address = _refused_address()
    assert main(["split", "--server", address, "--text", "Aspirin inhibits COX."]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the kgverify server at {address} (connection refused)" in err, err
    assert main(["kb", "reload", "--server", address]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the kgverify server at {address} (connection refused)" in err, err


async def test_split_waits_for_a_server_that_is_still_loading(cache_dir, monkeypatch, capsys):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    gate = asyncio.Event()
    original = Runtime._load_knowledge

    async def gated(self):
        await gate.wait()
        await original(self)

    monkeypatch.setattr(Runtime, "_load_knowledge", gated)
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    try:
        run = asyncio.ensure_future(asyncio.to_thread(
            main, ["split", "--server", server.addresses[0], "--text", "Step 1: Aspirin inhibits COX."]))
        err = ""
        while "waiting for the server at" not in err:
            assert not run.done(), f"split ended while the server was loading: {capsys.readouterr()}"
            await asyncio.sleep(0.05)
            err += capsys.readouterr().err
        gate.set()
        assert await asyncio.wait_for(run, 120) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["steps"][0]["claims"][0]["text"] == "Aspirin inhibits COX."
    finally:
        gate.set()
        await server.stop(0)
