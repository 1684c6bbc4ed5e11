"""The vLLM judge and the cascade end to end: real server, real client, the fake vLLM server over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import re

import pytest

from client import AsyncVerifierClient, VerifierError
from client.cli import main
from server.app import start_server
from server.backends.judges.prompts import PROMPT_VERSION
from tests.conftest import make_settings
from tests.fakes.vllm_server import ChatReply, FakeVllmServer

KNOWLEDGE = "kgverify.v1.KnowledgeService"


def llm(body: dict) -> ChatReply:
    """A judge model that reads the prompt: thrombin-inhibitor claims are contradicted, vitamin K ones supported."""
    user = body["messages"][-1]["content"]
    claim = re.search(r"^Claim: (.*)$", user, re.M).group(1).lower()
    evidence = user.split("Claim:")[0].lower()
    if "direct thrombin inhibitor" in claim and "vitamin k antagonist" in evidence:
        scores = {"A": 0.03, "B": 0.9, "C": 0.07}
    elif "vitamin k" in claim and "vitamin k" in evidence:
        scores = {"A": 0.8, "B": 0.05, "C": 0.15}
    else:
        scores = {"A": 0.1, "B": 0.1, "C": 0.8}
    # The model would rather chat; only the constraint makes it answer with a label.
    return ChatReply("Let me think.", {"Let": math.log(0.5), **{k: math.log(v / 2) for k, v in scores.items()}})


@pytest.fixture(scope="module")
def fake():
    with FakeVllmServer(chat=llm) as server:
        yield server


@pytest.fixture(autouse=True)
def healthy(fake):
    fake.faults.http_status = None
    fake.faults.unconstrained = False
    yield


@pytest.fixture(scope="module")
async def server(cache_dir, demo_kb_path, fake):
    # threshold 1.0: every judged claim goes to the LLM tier, whatever embedded model is installed
    settings = make_settings(cache_dir, judge={"backend": "cascade", "base_url": fake.base_url,
                                               "cascade_threshold": 1.0, "timeout_s": 5.0})
    verifier = await start_server(settings, ["127.0.0.1:0"])
    await verifier.wait_ready(300)
    yield verifier
    await verifier.stop(0)


def knowledge_claims(score):
    return [c for s in score.steps for c in s.claims if c.verdict != "no_knowledge"]


async def test_cascade_sends_uncertain_claims_to_the_llm_and_says_which_tier_decided(server, fake):
    steps = ["Warfarin is a direct thrombin inhibitor.", "Vitamin K reverses the anticoagulant effect of warfarin.",
             "So the answer is B."]
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        score = await client.score_knowledge(question="What reverses warfarin?", steps=steps)
        again = await client.score_knowledge(question="What reverses warfarin?", steps=steps)
    assert [s.verdict for s in score.steps] == ["contradicted", "supported", "no_knowledge"]
    assert [s.tier for s in score.steps] == ["llm", "llm", "none"]
    assert score.steps[0].probabilities.contradicted == pytest.approx(0.9)
    assert score.llm_calls == len(knowledge_claims(score)) == 2
    assert score.first_error_step == 0 and score.knowledge_index == pytest.approx(0.5)
    assert score.provenance["judge"].startswith("cascade[") and PROMPT_VERSION in score.provenance["judge_prompt_version"]
    # The same chain again: every verdict from the cache, no LLM call.
    assert [s.verdict for s in again.steps] == [s.verdict for s in score.steps]
    assert all(c.cached for c in knowledge_claims(again)) and again.llm_calls == 0
    prompt = fake.requests[-1][1]["messages"][-1]["content"]
    assert "[1] " in prompt and "[2] " in prompt  # numbered KB evidence


async def test_concurrent_identical_chains_cost_one_llm_call_per_claim(server, fake):
    """Single flight in the verdict cache: eight callers sending the same never-seen chain at once."""
    steps = ["Vitamin K reverses the anticoagulant effect of warfarin (single flight).",
             "Warfarin is a direct thrombin inhibitor (single flight)."]
    before = fake.paths().count("/v1/chat/completions")
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        scores = await asyncio.gather(*(client.score_knowledge(question="What reverses warfarin?", steps=steps)
                                        for _ in range(8)))
    claims = len(knowledge_claims(scores[0]))
    assert claims == 2 and all([s.verdict for s in x.steps] == [s.verdict for s in scores[0].steps] for x in scores)
    assert fake.paths().count("/v1/chat/completions") - before == claims
    assert sum(x.llm_calls for x in scores) == claims
    assert sum(c.cached for x in scores for c in knowledge_claims(x)) == 7 * claims


async def test_cascade_keeps_embedded_verdicts_as_degraded_when_the_llm_is_down(server, fake):
    fake.faults.http_status = 503
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        score = await client.score_knowledge(steps=["Protamine sulfate is the antidote that neutralizes heparin.",
                                                    "Metformin is a biguanide."])
        assert await client.health(KNOWLEDGE) == "SERVING"
    claims = knowledge_claims(score)
    assert claims and all(c.tier == "degraded" for c in claims)
    assert all(c.verdict in ("supported", "contradicted", "not_enough_info") and c.probabilities for c in claims)
    assert score.status == "ok" and score.error_steps == 0


async def test_vllm_judge_unreachable_is_unavailable(server, fake):
    fake.faults.http_status = 503
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        with pytest.raises(VerifierError) as info:
            await client.score_knowledge(steps=["Heparin is an anticoagulant given by injection."], judge="vllm")
    assert info.value.code == "UNAVAILABLE"


async def test_unusable_llm_output_is_an_error_verdict_never_a_score(server, fake):
    fake.faults.unconstrained = True
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        score = await client.score_knowledge(steps=["Aspirin irreversibly inhibits platelet cyclooxygenase.",
                                                    "So the answer is C."], judge="vllm")
    assert score.steps[0].verdict == "error" and score.steps[0].probabilities is None
    assert "structured outputs" in score.steps[0].claims[0].error
    assert score.status == "partial" and score.error_steps == 1 and score.knowledge_index is None


async def test_batch_with_context_and_presplit_steps_returns_verdicts_and_probabilities(server, tmp_path):
    rows = [{"id": "warfarin", "question": "What reverses warfarin?",
             "steps": ["Warfarin is a direct thrombin inhibitor.",
                       "Vitamin K reverses the anticoagulant effect of warfarin.", "So the answer is B."],
             "context": [{"id": "bnf-1", "text": "Warfarin is a vitamin K antagonist.", "title": "Warfarin"},
                         "Vitamin K reverses the anticoagulant effect of warfarin within hours."]}]
    source, out_vllm, out_default = tmp_path / "in.jsonl", tmp_path / "vllm.jsonl", tmp_path / "default.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for out, extra in ((out_vllm, ["--judge", "vllm"]), (out_default, [])):
        args = ["batch", "--no-progress", "--input", str(source), "--output", str(out), "--server",
                server.addresses[0], "--metrics", "ki", *extra]
        assert await asyncio.to_thread(main, args) == 0

    record = json.loads(out_vllm.read_text().splitlines()[0])
    assert record["status"] == "ok"
    assert [s["verdict"] for s in record["steps"]] == ["contradicted", "supported", "no_knowledge"]
    assert [s["tier"] for s in record["steps"]] == ["llm", "llm", "none"]
    for step in record["steps"][:2]:
        assert set(step["probabilities"]) == {"supported", "contradicted", "not_enough_info"}
        assert math.isclose(sum(step["probabilities"].values()), 1.0, abs_tol=1e-6)
        assert {e["fact_id"] for e in step["evidence"]} <= {"bnf-1", "context:1"}  # the context only, no KB facts
    assert record["steps"][2]["probabilities"] is None and record["llm_calls"] == 2

    default = json.loads(out_default.read_text().splitlines()[0])  # the server's cascade, same context
    assert [s["verdict"] for s in default["steps"]] == ["contradicted", "supported", "no_knowledge"]
    assert all(s["probabilities"] for s in default["steps"][:2])
