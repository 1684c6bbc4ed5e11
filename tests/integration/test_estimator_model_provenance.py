"""InfoGain's provenance names the weights behind the vLLM LM's model name (estimator_model), as the judge's does
(judge_model): `lm:vllm:tiny` alone did not change when vLLM served other weights under the name."""

from __future__ import annotations

import asyncio

import pytest

from client import AsyncVerifierClient
from server.app import start_server
from tests.conftest import make_settings
from tests.fakes.vllm_server import FakeVllmServer

CHAIN = {"question": "Which drug reverses heparin?", "answer": "Protamine sulfate",
         "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]}


@pytest.fixture
def fake_lm():
    with FakeVllmServer(model="tiny", root="/models/tiny-a", scorer=lambda ids: [-0.5] * (len(ids) - 1),
                        tokenizer=lambda text, special: [1 + ord(c) % 200 for c in text]) as fake:
        yield fake


async def test_info_gain_names_the_lm_weights_and_a_swap_shows(cache_dir, demo_kb_path, fake_lm, monkeypatch):
    from server.backends.lm import vllm_lm

    monkeypatch.setattr(vllm_lm, "CONTEXT_TTL_S", 0.1)  # (read again every 10 s by default)
    settings = make_settings(cache_dir, lm={"backend": "vllm", "model": "tiny", "base_url": fake_lm.base_url})
    server = await start_server(settings, ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            score = await client.score_info_gain(**CHAIN)
            assert score.provenance["estimator"] == "lm:vllm:tiny"
            assert score.provenance["estimator_model"] == "/models/tiny-a"
            nli = await client.score_info_gain(estimator="nli", **CHAIN)
            assert "estimator_model" not in nli.provenance
            fake_lm.root = "/models/tiny-b"
            async with asyncio.timeout(30):
                while (await client.score_info_gain(**CHAIN)).provenance.get("estimator_model") != "/models/tiny-b":
                    await asyncio.sleep(0.2)
    finally:
        await server.stop(0)
