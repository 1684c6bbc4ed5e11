"""Judges through the real server: the cascade's fail-safe promise with the verdict cache's single flight."""

from __future__ import annotations

import asyncio
import math

import pytest

from client import AsyncVerifierClient
from server.app import start_server
from tests.conftest import make_settings
from tests.fakes.vllm_server import ChatReply, FakeVllmServer


def llm(body: dict) -> ChatReply:
    return ChatReply("A", {"A": math.log(0.8), "B": math.log(0.1), "C": math.log(0.1)})


@pytest.fixture(scope="module")
def fake():
    with FakeVllmServer(chat=llm) as server:
        yield server


@pytest.fixture(scope="module")
async def server(cache_dir, demo_kb_path, fake):
    # threshold 1.0: every judged claim goes to the LLM tier
    settings = make_settings(cache_dir, judge={"backend": "cascade", "base_url": fake.base_url,
                                               "cascade_threshold": 1.0, "timeout_s": 30.0})
    verifier = await start_server(settings, ["127.0.0.1:0"])
    await verifier.wait_ready(300)
    yield verifier
    await verifier.stop(0)


def knowledge_claims(score):
    return [c for s in score.steps for c in s.claims if c.verdict != "no_knowledge"]


async def test_a_request_waiting_for_another_s_slow_llm_verdict_still_gets_degraded_verdicts_in_time(server, fake):
    """A caller with a short deadline whose claims are being judged for a caller with a long one (single flight)
    must not wait out its whole deadline: the cascade promises degraded verdicts in time, not DEADLINE_EXCEEDED."""
    steps = ["Warfarin is a vitamin K antagonist (slow single flight)."]
    fake.faults.delay_s = 15.0  # the patient caller's LLM call; the hurried one has 8 s (margin for a busy CPU)
    try:
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            calls = fake.paths().count("/v1/chat/completions")
            patient = asyncio.ensure_future(client.score_knowledge(steps=steps, timeout_s=60))
            while fake.paths().count("/v1/chat/completions") == calls:  # its LLM call is in flight
                await asyncio.sleep(0.02)
            hurried = await client.score_knowledge(steps=steps, timeout_s=8.0)
            slow = await patient
    finally:
        fake.faults.delay_s = 0.0
    assert [c.tier for c in knowledge_claims(hurried)] == ["degraded"]
    assert knowledge_claims(hurried)[0].verdict in ("supported", "contradicted", "not_enough_info")
    assert hurried.status == "ok"
    assert [c.tier for c in knowledge_claims(slow)] == ["llm"] and slow.llm_calls == 1


FILLER = ("Type 2 diabetes affects hundreds of millions of adults worldwide, and its prevalence has risen in every "
          "region over the last three decades. Screening programmes in primary care identify many patients years "
          "before symptoms. Lifestyle measures such as diet and exercise remain the foundation of care, and "
          "structured education improves self-management. ") * 8
OTHER_PASSAGES = ["Insulin is secreted by pancreatic beta cells.", "Sulfonylureas stimulate insulin release.",
                  "Hypoglycaemia is the main risk of sulfonylureas.", "GLP-1 agonists are given by injection.",
                  "SGLT2 inhibitors lower glucose by increasing urinary excretion.",
                  "Diabetes raises cardiovascular risk."]


async def test_a_fact_at_the_end_of_a_long_context_passage_is_found_among_more_passages_than_top_k(verifier):
    """Context passages are ranked for each claim before the judge reads the top_k; the embedder reads only a
    passage's first 256 tokens, so a long passage whose fact comes at its end ranked last and was never judged."""
    long_passage = FILLER + "Metformin is cleared by the kidneys, unchanged, by tubular secretion."
    context = [{"id": "long", "text": long_passage}] + [{"id": f"p{i}", "text": t} for i, t in enumerate(OTHER_PASSAGES)]
    async with AsyncVerifierClient(verifier.addresses[0], retries=0) as client:
        score = await client.score_knowledge(steps=["Metformin is cleared by the kidneys."], context=context,
                                             judge="nli", top_k=5)
    (claim,) = knowledge_claims(score)
    assert "long" in [e.fact_id for e in claim.evidence]
    assert claim.verdict == "supported" and claim.evidence[0].fact_id == "long"
