"""Provenance names the weights behind a vLLM judge's model name (judge_model): `vllm:judge` alone said nothing
when another model was served under the same name, and an auditor could not tell which model judged."""

from __future__ import annotations

import asyncio
import math

import pytest

from client import AsyncVerifierClient
from client.errors import VerifierError
from server.app import start_server
from tests.conftest import make_settings
from tests.fakes.vllm_server import ChatReply, FakeVllmServer

STEPS = ["Warfarin is a vitamin K antagonist.", "So the answer is B."]


def llm(body: dict) -> ChatReply:
    return ChatReply("A", {k: math.log(v) for k, v in {"A": 0.8, "B": 0.1, "C": 0.1}.items()})


@pytest.fixture(scope="module")
def fake():
    with FakeVllmServer(chat=llm, root="/models/judge-a") as server:
        yield server


@pytest.fixture(scope="module")
async def server(cache_dir, demo_kb_path, fake):
    # no verdict cache: the provenance must not depend on the cache having read the model
    settings = make_settings(cache_dir, judge={"backend": "vllm", "base_url": fake.base_url, "cache_size": 0,
                                               "timeout_s": 5.0})
    verifier = await start_server(settings, ["127.0.0.1:0"])
    await verifier.wait_ready(300)
    yield verifier
    await verifier.stop(0)


async def test_each_judge_names_its_model_and_a_swap_under_the_same_name_shows(server, fake):
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        vllm = await client.score_knowledge(question="What reverses warfarin?", steps=STEPS)
        cascade = await client.score_knowledge(question="What reverses warfarin?", steps=STEPS, judge="cascade")
        nli = await client.score_knowledge(question="What reverses warfarin?", steps=STEPS, judge="nli")
        assert vllm.provenance["judge"] == "vllm:judge" and vllm.provenance["judge_model"] == "/models/judge-a"
        assert cascade.provenance["judge_model"] == "/models/judge-a"
        assert "judge_model" not in nli.provenance  # an embedded judge: no model behind a served name

        fake.faults.http_status = 503  # vLLM restarting with other weights under the same name
        with pytest.raises(VerifierError):
            await client.score_knowledge(question="What reverses warfarin?", steps=STEPS)
        fake.root = "/models/judge-b"
        fake.faults.http_status = None
        async with asyncio.timeout(30):
            while (await client.score_knowledge(question="What reverses warfarin?", steps=STEPS)
                   ).provenance.get("judge_model") != "/models/judge-b":
                await asyncio.sleep(0.2)
