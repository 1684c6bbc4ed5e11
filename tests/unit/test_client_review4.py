"""The batch scheduler keeps --concurrency over all servers, with more servers than it allows in flight."""

import asyncio
from pathlib import Path

import pytest

from client import batch
from client.batch import BatchOptions, Item, _Scheduler
from client.errors import VerifierError
from client.types import ChainScore
from tests.unit.test_batch_scheduler import Collect


class Pool:
    """Servers that count the rows in flight over all of them (taken from the stream, not yet answered)."""

    def __init__(self):
        self.in_flight = self.most = 0


class Holding:
    """A server that holds each row it takes for a while before answering it; `down` ones fail every stream."""

    def __init__(self, pool, name, down=False):
        self.pool, self.target, self.down, self.scored = pool, name, down, 0

    async def stream_chains(self, items):
        if self.down:
            raise VerifierError("UNAVAILABLE", "UNAVAILABLE", "Socket closed")
        taken: asyncio.Queue = asyncio.Queue()

        async def read():
            async for item_id, _request in items:
                self.pool.in_flight += 1
                self.pool.most = max(self.pool.most, self.pool.in_flight)
                taken.put_nowait(item_id)
            taken.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item_id := await taken.get()) is not None:
                await asyncio.sleep(0.01)  # (every stream has taken what it was allowed by now)
                self.pool.in_flight -= 1
                self.scored += 1
                yield item_id, ChainScore(steps=(), chain_text="", status="ok")
        finally:
            reader.cancel()


def _run(servers, concurrency, n=12):
    items = [Item(position=i, id=f"c{i}", request=f"request {i}", extra={}) for i in range(n)]
    writer = Collect()
    opts = BatchOptions(input=Path("in.jsonl"), output=Path("out.jsonl"), concurrency=concurrency, progress=False)
    asyncio.run(asyncio.wait_for(_Scheduler(opts, items, writer).run(servers), 30))
    return writer


@pytest.mark.parametrize("servers,concurrency", [(4, 2), (3, 1), (2, 2), (2, 5)])
def test_no_more_rows_are_in_flight_than_concurrency_whatever_the_number_of_servers(servers, concurrency):
    pool = Pool()
    fleet = [Holding(pool, f"fake:{i}") for i in range(servers)]
    writer = _run(fleet, concurrency)
    assert sorted(writer.records) == list(range(12))
    assert all(r["status"] == "ok" for r in writer.records.values())
    assert pool.most == concurrency  # reached, never passed


def test_a_server_that_is_down_gives_back_its_share_of_the_concurrency(monkeypatch):
    monkeypatch.setattr(batch, "backoff_s", lambda *a, **k: 0.0)
    pool = Pool()
    fleet = [Holding(pool, "fake:down", down=True), Holding(pool, "fake:up")]
    writer = _run(fleet, 1)
    assert sorted(writer.records) == list(range(12)) and fleet[1].scored == 12
    assert pool.most == 1


def test_a_demo_chain_with_a_field_a_request_cannot_take_is_named_by_its_line_before_any_server(tmp_path, capsys):
    import json

    from client.cli import main

    chains = tmp_path / "chains.jsonl"
    chains.write_text(json.dumps({"id": "fine", "question": "Q?", "steps": ["A step."], "answer": "B"}) + "\n\n"
                      + json.dumps({"id": "odd", "question": "Q?", "steps": "one string", "answer": "B"}) + "\n")
    assert main(["demo", "--chains", str(chains), "--server", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert f"--chains {chains}: line 3: invalid request: steps: must be a list of strings" in err, err
    assert "cannot reach" not in err  # refused before connecting


def test_a_verdict_or_tier_this_client_does_not_know_reads_unknown_instead_of_ending_the_conversion():
    """A newer server may add an enum value; the conversion (and a batch stream) must not end on it."""
    from client.convert import chain_score
    from kgverify.v1 import knowledge_service_pb2 as kpb

    response = kpb.ScoreKnowledgeResponse()
    step = response.steps.add()
    step.step.index, step.step.text, step.verdict, step.tier = 0, "Aspirin inhibits COX.", 42, 17
    step.claims.add(verdict=43).claim.text = "Aspirin inhibits COX."
    score = chain_score(response, None)
    assert (score.steps[0].verdict, score.steps[0].tier, score.steps[0].claims[0].verdict) == \
        ("unknown_42", "unknown_17", "unknown_43")


def test_a_token_file_saved_with_a_byte_order_mark_sends_the_token_alone(tmp_path):
    """The server ignores a UTF-8 byte order mark in its token file; a client reading the same file must too."""
    from client.batch import channel_security

    token = tmp_path / "token"
    token.write_bytes("\ufeffsecret-token\r\n".encode("utf-8"))
    assert channel_security(token_file=token)[1] == (("authorization", "Bearer secret-token"),)
