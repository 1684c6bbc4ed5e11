"""SPLITTER_LLM end to end: a real gRPC server whose decomposer is the fake vLLM server."""

from __future__ import annotations

import pytest

from client import AsyncVerifierClient, VerifierError
from tests.conftest import make_settings
from tests.contract.test_llm_decomposer import CHAIN, PIECES, QUESTION, FakeDecomposerModel
from tests.fakes.vllm_server import FakeVllmServer


@pytest.fixture(scope="module")
def fake():
    with FakeVllmServer(model="decomposer", chat=FakeDecomposerModel()) as server:
        yield server


@pytest.fixture(scope="module")
async def server(fake, tmp_path_factory):
    from server.app import start_server

    settings = make_settings(tmp_path_factory.mktemp("kgv-llm-split"), kb={"enabled": False},
                             splitter={"base_url": fake.base_url, "model": "decomposer", "timeout_s": 5})
    srv = await start_server(settings, ["127.0.0.1:0"])
    await srv.wait_ready(300)
    yield srv
    await srv.stop(0)


@pytest.fixture(autouse=True)
def healthy_fake(fake):
    fake.chat = FakeDecomposerModel()
    fake.faults.http_status = None
    yield


async def test_split_reasoning_with_the_llm_splitter(server):
    async with AsyncVerifierClient(server.addresses[0]) as client:
        result = await client.split(CHAIN, question=QUESTION, splitter="llm")
        rules = await client.split(CHAIN, question=QUESTION, splitter="rules")
    assert result.splitter == "llm/1:decomposer" and rules.splitter.startswith("rules/")
    assert [s.knowledge for s in result.steps] == [k for _, k, _ in PIECES]
    assert [CHAIN[s.start:s.end] for s in result.steps] == [s.text for s in result.steps]
    assert result.steps[1].text == "Warfarin is a vitamin K antagonist, so vitamin K reverses its effect."


async def test_knowledge_scoring_counts_the_decomposer_call(server):
    async with AsyncVerifierClient(server.addresses[0]) as client:
        score = await client.score_knowledge(
            reasoning=CHAIN, question=QUESTION, splitter="llm",
            context=[{"id": "p1", "text": "Vitamin K reverses the effect of warfarin, a vitamin K antagonist."}])
    assert score.llm_calls >= 1 and score.provenance["splitter"] == "llm/1:decomposer"
    assert [s.verdict for s in score.steps][0] == "no_knowledge"


async def test_malformed_decomposer_output_fails_the_request_explicitly(server, fake):
    fake.chat = FakeDecomposerModel(raw='{"steps": [')
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        with pytest.raises(VerifierError) as info:
            await client.split(CHAIN, question=QUESTION, splitter="llm")
    assert info.value.code == "INTERNAL" and info.value.reason == "BACKEND_BAD_RESPONSE"
    assert "malformed JSON" in info.value.message


async def test_a_decomposer_that_is_down_is_unavailable(server, fake):
    fake.faults.http_status = 503
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        with pytest.raises(VerifierError) as info:
            await client.split(CHAIN, question=QUESTION, splitter="llm")
    assert info.value.code == "UNAVAILABLE" and info.value.reason == "BACKEND_UNAVAILABLE"
