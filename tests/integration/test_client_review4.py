"""The clients against a real server: the demo scores a chain without an answer for KI only instead of stopping,
and the blocking client's wait_ready takes serving= as the asyncio client's does."""

import asyncio
import io

import pytest

from client import AsyncVerifierClient, VerifierClient, VerifierError
from client.demo import run_demo
from server.health import KNOWLEDGE
from tests.fakes.backends import FakeJudge
from tests.integration.test_cli_servers import _server

STEP = "Metformin lowers blood glucose mainly by cutting down glucose output from the liver."




async def test_a_demo_chain_without_an_answer_is_scored_for_ki_only_and_the_others_in_full(
        cache_dir, demo_kb_path, monkeypatch):
    server = await _server(cache_dir, monkeypatch)
    chains = [{"id": "with-answer", "question": "Which drug?", "steps": [STEP], "answer": "B",
               "expected": ["supported"]},
              {"id": "no-answer", "question": "Which drug?", "steps": [STEP], "expected": ["supported"]},
              {"id": "gold-only", "question": "Which drug?", "steps": [STEP], "gold_answer": "B"}]
    out = io.StringIO()
    try:
        counts = await run_demo(server.addresses[0], chains, out, ready_timeout_s=60)
    finally:
        await server.stop(0)
    text = out.getvalue()
    assert counts == {"matched": 2, "total": 2}
    blocks = {block.split(":", 1)[0]: block for block in text.split("== ")[1:]}
    assert set(blocks) == {"with-answer", "no-answer", "gold-only"}
    assert "InfoGain" in blocks["with-answer"] and "InfoGain" in blocks["gold-only"]
    assert "no answer or gold_answer: KI only" in blocks["no-answer"]
    assert "KI 1.00" in blocks["no-answer"] and "nats/step" not in blocks["no-answer"]
    assert "no answer" not in blocks["with-answer"] + blocks["gold-only"]


async def test_the_blocking_wait_ready_takes_serving_false_as_the_asyncio_one_does(
        cache_dir, demo_kb_path, monkeypatch):
    judge = FakeJudge()
    server = await _server(cache_dir, monkeypatch, judge, server={"health_interval_s": 0.2})
    address = server.addresses[0]

    def blocking_wait(serving, timeout_s):
        with VerifierClient(address) as client:
            client.wait_ready(KNOWLEDGE, timeout_s=timeout_s, serving=serving)

    try:
        judge.down = True  # the knowledge service turns NOT_SERVING; it still takes calls
        async with AsyncVerifierClient(address) as client:
            while await client.health(KNOWLEDGE) != "NOT_SERVING":
                await asyncio.sleep(0.05)
            await client.wait_ready(KNOWLEDGE, timeout_s=60, serving=False)
            await asyncio.to_thread(blocking_wait, False, 60)  # returns: the service takes calls
            with pytest.raises(VerifierError) as waited:
                await asyncio.to_thread(blocking_wait, True, 1.0)  # its judge is down: never SERVING
            assert waited.value.reason == "NOT_READY"
    finally:
        await server.stop(0)
