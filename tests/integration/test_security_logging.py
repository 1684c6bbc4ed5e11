"""Request text never reaches the logs unless KGV_SERVER__LOG_REQUEST_TEXT is on: a canary string checks it."""

import logging
import uuid

import pytest

from client import AsyncVerifierClient, VerifierError
from client import requests as rq
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

LOGGERS = ("", "kgverify", "server", "kb", "client", "grpc", "httpx", "sentence_transformers")


def _canary() -> str:
    return f"CANARY{uuid.uuid4().hex[:12]}"


def _capture_everything(caplog):
    for name in LOGGERS:  # some loggers were quietened by earlier in-process servers
        caplog.set_level(logging.DEBUG, logger=name)


async def _send_everything(address: str, canary: str) -> None:
    """Every RPC, with the canary in every text field, including requests that fail validation."""
    chain = {"question": f"Patient {canary} has a bleed on heparin: what reverses it?",
             "steps": [f"The patient {canary} takes heparin.", "Protamine sulfate neutralizes heparin."],
             "answer": f"Protamine {canary}", "gold_answer": f"Protamine sulfate {canary}"}
    async with AsyncVerifierClient(address, retries=0) as client:
        await client.split(f"Step 1: {canary} is bleeding. Step 2: give protamine.")
        await client.score_chain(**chain)
        await client.score_chain(context=[f"Protamine reverses heparin in {canary}."], **chain)
        await client.score_info_gain(**chain)
        await client.score_knowledge(steps=chain["steps"])
        for bad in ({"reasoning": f"both {canary}", "steps": [canary]}, {"steps": [canary * 2000]}):
            with pytest.raises(VerifierError) as info:
                await client.score_knowledge(**bad)
            assert info.value.code == "INVALID_ARGUMENT"

        async def items():
            yield f"item-{canary[:6]}", rq.chain_request(chain)
            yield "bad", rq.chain_request({"question": canary, "reasoning": canary, "steps": [canary]})

        results = [r async for r in client.stream_chains(items())]
        assert len(results) == 2


async def test_a_canary_in_requests_never_appears_in_the_logs(verifier, caplog):
    """The session server: real backends, log_request_text off (the default)."""
    assert verifier.runtime.settings.server.log_request_text is False
    _capture_everything(caplog)
    canary = _canary()
    await _send_everything(verifier.addresses[0], canary)
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client:
        await client.search(f"heparin reversal {canary}")
    assert caplog.records, "nothing was captured: the check would pass vacuously"
    assert any(r.name == "kgverify.rpc" for r in caplog.records)
    leaked = [r for r in caplog.records if canary in r.getMessage() or canary in (r.exc_text or "")]
    assert not leaked, [f"{r.name}: {r.getMessage()[:200]}" for r in leaked]
    assert canary not in caplog.text


async def test_request_text_is_logged_at_debug_only_when_enabled(cache_dir, monkeypatch, caplog):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    settings = make_settings(cache_dir, kb={"enabled": False}, server={"log_request_text": True})
    server = await start_server(settings, ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        _capture_everything(caplog)
        canary = _canary()
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            await client.score_chain(question=f"What reverses heparin in {canary}?",
                                     steps=["Protamine sulfate neutralizes heparin."], answer="Protamine",
                                     context=["Protamine sulfate is the antidote that neutralizes heparin."])
        logged = [r for r in caplog.records if canary in r.getMessage()]
        assert logged and all(r.levelno == logging.DEBUG and r.name == "kgverify.rpc" for r in logged)
        caplog.clear()
        caplog.set_level(logging.INFO, logger="kgverify")
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            await client.split(f"Step 1: {canary}.")
        assert canary not in caplog.text  # enabled, but only at DEBUG
    finally:
        await server.stop(0)


@pytest.mark.parametrize("backend", ["vllm", "cascade"])
async def test_an_llm_judges_unusable_words_reach_the_claim_not_the_log(cache_dir, demo_kb_path, caplog, backend):
    """An LLM judge that writes prose instead of a label (structured outputs not applied) restates the claim: its
    words went into a WARNING line with log_request_text off. The claim's error still quotes them to the caller."""
    from server.backends.judges.vllm_judge import parse_judgement
    from tests.fakes.vllm_server import ChatReply, Faults, FakeVllmServer

    canary = _canary()
    reply = ChatReply(f"The claim says patient {canary} bleeds on heparin, which", {"The": -0.1, "B": -3.0})
    with FakeVllmServer(model="judge", chat=lambda body: reply, faults=Faults(unconstrained=True)) as fake:
        settings = make_settings(cache_dir, judge={"backend": backend, "base_url": fake.base_url, "model": "judge",
                                                   "cascade_threshold": 1.0, "cache_size": 0})
        server = await start_server(settings, ["127.0.0.1:0"])
        try:
            await server.wait_ready(300)
            _capture_everything(caplog)
            async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
                score = await client.score_knowledge(
                    steps=["Protamine sulfate neutralizes heparin."],
                    context=["Protamine sulfate is the antidote that neutralizes heparin."])
        finally:
            await server.stop(0)
    claim = score.steps[0].claims[0]
    assert canary in claim.error and "structured outputs" in claim.error  # the caller is told what came back
    unusable = [r for r in caplog.records if "LLM judge output unusable" in r.getMessage()]
    assert unusable and "characters of model output>" in unusable[0].getMessage()
    assert canary not in caplog.text

    # the reasoning a --reasoning-parser splits off is withheld too
    data = {"choices": [{"message": {"content": "", "reasoning_content": f"Patient {canary} is bleeding"},
                         "finish_reason": "stop"}]}
    with pytest.raises(ValueError) as info:
        parse_judgement(data)
    assert canary in str(info.value) and canary not in info.value.loggable()
