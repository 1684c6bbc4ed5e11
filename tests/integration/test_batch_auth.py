"""`kgverify batch` against a server that refuses its calls (no bearer token, or one it does not accept): a
configuration error (exit status 2) that says to pass --token-file, never "run the same command again"."""

import asyncio
import json
from pathlib import Path

import pytest

from client.batch import BatchOptions, BatchStopped, Item, _Scheduler
from client.cli import main
from client.errors import VerifierError
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

TOKEN = "batch-test-token"
CHAIN = {"question": "Which drug reverses heparin?", "steps": ["Protamine sulfate neutralizes heparin."],
         "answer": "Protamine", "context": ["Protamine sulfate is the antidote that neutralizes heparin."]}


@pytest.fixture
async def token_server(cache_dir, monkeypatch, tmp_path):
    """A server (no KB, fake backends) whose calls need a bearer token from its tokens file."""
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    tokens = tmp_path / "server-tokens"
    tokens.write_text(TOKEN + "\n")
    server = await start_server(make_settings(cache_dir, kb={"enabled": False},
                                              security={"auth_tokens_file": tokens}), ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


async def _batch(tmp_path, server, *extra):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", **CHAIN}) + "\n" for i in range(3)))
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out), "--server",
            server.addresses[0], *map(str, extra)]
    return await asyncio.to_thread(main, args), out


async def test_batch_without_a_token_stops_with_status_2_and_says_to_pass_token_file(token_server, tmp_path,
                                                                                    capsys):
    code, out = await _batch(tmp_path, token_server)
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert "UNAUTHENTICATED" in last and "pass the file holding it with --token-file" in last, last
    assert "run the same command again to resume" not in err and "every server failed" not in err
    assert not out.exists()  # refused before anything was written

    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    code, out = await _batch(tmp_path, token_server, "--token-file", wrong)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "does not accept the token in --token-file" in last, last

    right = tmp_path / "token"
    right.write_text(TOKEN + "\n")
    code, out = await _batch(tmp_path, token_server, "--token-file", right)
    assert code == 0 and [json.loads(line)["status"] for line in out.read_text().splitlines()] == ["ok"] * 3


class Refuses:
    """A server whose streams are refused (as when its tokens change while a run goes on)."""

    def __init__(self, target, code):
        self.target, self.code, self.metadata, self.streams = target, code, (), 0

    async def stream_chains(self, items):
        self.streams += 1
        raise VerifierError(self.code, self.code, "missing or unknown bearer token")
        yield  # an async generator, like the real client's


class Writer:
    def __init__(self, journal):
        from client.batch import BatchSummary

        self.summary, self.journal, self.records = BatchSummary(), type("J", (), {"path": journal})(), {}

    def put(self, position, record):
        self.records[position] = record


@pytest.mark.parametrize("code", ["UNAUTHENTICATED", "PERMISSION_DENIED"])
async def test_streams_every_server_refuses_stop_the_run_at_once_with_status_2(code):
    items = [Item(position=i, id=f"c{i}", request=None, extra={}) for i in range(4)]
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), concurrency=4, progress=False)
    clients = [Refuses("a:1", code), Refuses("b:1", code)]
    with pytest.raises(BatchStopped) as info:
        await asyncio.wait_for(_Scheduler(opts, items, Writer(Path("out.jsonl"))).run(clients), 5)
    assert info.value.exit_code == 2
    assert [c.streams for c in clients] == [1, 1]  # a refusal is not retried
    assert "--token-file" in str(info.value) and "run the same command again to resume" not in str(info.value)
