"""With the LLM decomposer as the default splitter, the knowledge service's health follows its vLLM as well as the
judge's: every call that sends reasoning text needs it."""

from __future__ import annotations

import asyncio

from client import AsyncVerifierClient
from tests.conftest import make_settings
from tests.fakes.vllm_server import FakeVllmServer

KNOWLEDGE = "kgverify.v1.KnowledgeService"


async def _until(client, status: str, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.1)):
        if await client.health(KNOWLEDGE) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{KNOWLEDGE} never became {status}")


async def test_the_decomposers_vllm_down_makes_the_knowledge_service_not_serving_until_it_returns(tmp_path):
    from server.app import start_server

    with FakeVllmServer(model="decomposer") as fake:
        settings = make_settings(tmp_path, kb={"enabled": False}, judge={"backend": "baseline"},
                                 splitter={"backend": "llm", "base_url": fake.base_url, "model": "decomposer",
                                           "timeout_s": 5}, server={"health_interval_s": 0.2})
        server = await start_server(settings, ["127.0.0.1:0"])
        try:
            await server.wait_ready(300)
            async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
                assert await client.health(KNOWLEDGE) == "SERVING"
                fake.faults.dead_engine = True  # the judge (embedded) is fine; the splitter's vLLM is not
                await _until(client, "NOT_SERVING")
                assert await client.health() == "NOT_SERVING"
                fake.faults.dead_engine = False
                await _until(client, "SERVING")
        finally:
            await server.stop(0)
