"""The vLLM judge against recorded vLLM 0.12 shapes and the fake vLLM server (real HTTP)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest

from server.backends.judges.prompts import LABELS, PROMPT_VERSION
from server.backends.judges.vllm_judge import JudgeOutputError, VllmJudge, parse_judgement
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError, BackendUnavailableError
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Tier, Verdict
from tests.fakes.vllm_server import VLLM_VERSION, ChatReply, FakeVllmServer, label_choice_reply

FIXTURES = Path(__file__).parent / "fixtures" / f"vllm-{VLLM_VERSION}"
EVIDENCE = (Evidence("pharm-0011", "Warfarin is a vitamin K antagonist.", "BNF", "Warfarin", 0.8,
                     EvidenceOrigin.KNOWLEDGE_BASE),)
CLAIM = "Warfarin is a direct thrombin inhibitor."


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def structure(value):
    """Key structure of a JSON value (lists by their first element), for shape congruence."""
    if isinstance(value, dict):
        return {k: structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(value[0])] if value else []
    return type(value).__name__ if value is not None else None


def covers(recorded, produced, path="") -> list[str]:
    """Paths present in the fake's answer but missing from (or shaped differently than) the recording."""
    if isinstance(produced, dict):
        if not isinstance(recorded, dict):
            return [path]
        return [p for k, v in produced.items() for p in
                ([f"{path}.{k}"] if k not in recorded else covers(recorded[k], v, f"{path}.{k}"))]
    if isinstance(produced, list) and produced:
        return covers(recorded[0], produced[0], path + "[]") if isinstance(recorded, list) and recorded else [path]
    return []


@pytest.fixture
def fake():
    server = FakeVllmServer(chat=lambda body: label_choice_reply({"A": 0.1, "B": 0.85, "C": 0.05}))
    with server:
        yield server


@pytest.fixture
async def judge(fake):
    judge = VllmJudge(VllmClient(fake.base_url, max_retries=1, backoff_s=0.01), "judge")
    yield judge
    await judge.aclose()


def test_recorded_label_choice_response_parses():
    verdict, probs = parse_judgement(fixture("chat_label_choice.json"))
    b, a = math.exp(-0.2) + math.exp(-3.5), math.exp(-2.1)
    assert verdict is Verdict.CONTRADICTED
    assert probs.contradicted == pytest.approx(b / (a + b)) and probs.not_enough_info == 0.0


@pytest.mark.parametrize("name, reason", [("chat_unconstrained.json", "unconstrained"),
                                          ("chat_label_no_logprobs.json", "no logprobs")])
def test_recorded_unusable_responses_are_rejected(name, reason):
    with pytest.raises(JudgeOutputError, match=reason):
        parse_judgement(fixture(name))


async def test_fake_answers_the_judges_request_in_the_recorded_shape(fake, judge):
    await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
    import httpx

    body = fake.requests[-1][1]
    async with httpx.AsyncClient() as http:
        produced = (await http.post(f"{fake.base_url}/chat/completions", json=body)).json()
    assert covers(structure(fixture("chat_label_choice.json")), structure(produced)) == []


async def test_probabilities_come_from_logprobs_renormalized(fake, judge):
    out = await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
    assert out[0].verdict is Verdict.CONTRADICTED and out[0].tier is Tier.LLM and out[0].llm_calls == 1
    assert out[0].probabilities.contradicted == pytest.approx(0.85)
    assert out[0].probabilities.supported == pytest.approx(0.10)
    assert out[0].evidence == EVIDENCE
    path, body = fake.requests[-1]
    assert path == "/v1/chat/completions" and body["structured_outputs"] == {"choice": list(LABELS)}
    assert body["temperature"] == 0 and "seed" in body and not any(k.startswith("guided_") for k in body)
    assert judge.prompt_version == PROMPT_VERSION


async def test_a_model_that_wants_to_ramble_is_held_to_a_label(fake, judge):
    # Canary: the model's favourite output is prose. Only a request that vLLM really constrains gets a
    # label back; the removed guided_* fields would come back as this prose (vLLM >= 0.12 ignores them).
    fake.chat = lambda body: ChatReply("The claim is contradicted.", {"The": -0.05, "B": -3.2, "A": -4.4})
    out = await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
    assert out[0].verdict is Verdict.CONTRADICTED
    assert out[0].probabilities.contradicted == pytest.approx(1 / (1 + math.exp(-1.2)))


async def test_unconstrained_output_is_an_error_verdict(fake, judge):
    fake.chat = lambda body: ChatReply("The claim is contradicted.", {"The": -0.05, "B": -3.2})
    fake.faults.unconstrained = True
    out = await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
    assert out[0].verdict is Verdict.ERROR and out[0].probabilities is None
    assert "structured outputs" in out[0].error and out[0].llm_calls == 1


@pytest.mark.parametrize("fault", ["malformed_body", "http_400"])
async def test_a_reachable_server_with_unusable_answers_gives_error_verdicts(fake, fault):
    if fault == "malformed_body":
        fake.faults.malformed_body = True
    else:
        fake.faults.http_status = 400
    judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
    try:
        out = await judge.judge([JudgeItem(CLAIM, EVIDENCE), JudgeItem("Other claim.", EVIDENCE)], Deadline())
    finally:
        await judge.aclose()
    assert [o.verdict for o in out] == [Verdict.ERROR, Verdict.ERROR]
    assert all(o.error.startswith("LLM judge:") and o.probabilities is None for o in out)


async def test_a_model_vllm_does_not_serve_makes_the_judge_unavailable_not_error_verdicts(fake):
    """vLLM answers 404 for every claim when it serves another model name: the tier is down (the cascade then
    keeps its embedded verdicts as degraded), not a claim-by-claim ERROR."""
    judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "no-such-model")
    try:
        with pytest.raises(BackendUnavailableError, match="`no-such-model` does not exist"):
            await judge.judge([JudgeItem(CLAIM, EVIDENCE), JudgeItem("Other claim.", EVIDENCE)], Deadline())
    finally:
        await judge.aclose()


async def test_transient_errors_are_retried_then_unavailable(fake, judge):
    fake.faults.http_status = 503
    with pytest.raises(BackendUnavailableError):
        await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
    assert len([p for p, _ in fake.requests if p == "/v1/chat/completions"]) == 2  # one retry


async def test_an_unreachable_server_is_unavailable():
    with FakeVllmServer() as gone:
        url = gone.base_url
    judge = VllmJudge(VllmClient(url, max_retries=1, backoff_s=0.01), "judge")
    try:
        with pytest.raises(BackendUnavailableError):
            await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline())
        assert not await judge.ready()
    finally:
        await judge.aclose()


async def test_a_slow_server_times_out_inside_the_rpc_deadline(fake, judge):
    fake.faults.delay_s = 2.0
    with pytest.raises(BackendTimeoutError):
        await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline.after(0.3))


async def test_claims_without_evidence_cost_no_call(fake, judge):
    out = await judge.judge([JudgeItem(CLAIM, ())], Deadline())
    assert out[0].verdict is Verdict.NOT_ENOUGH_INFO and out[0].llm_calls == 0 and fake.requests == []


async def test_concurrent_calls_are_bounded(fake):
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    two_in_flight = threading.Barrier(2, timeout=10)

    def chat(body):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            two_in_flight.wait()  # every call waits for a partner, so the bound is reached if allowed
        except threading.BrokenBarrierError:
            pass
        with lock:
            state["now"] -= 1
        return label_choice_reply({"A": 0.9, "B": 0.05, "C": 0.05})

    fake.chat = chat
    judge = VllmJudge(VllmClient(fake.base_url, max_concurrency=2), "judge")
    try:
        out = await judge.judge([JudgeItem(f"claim {i}", EVIDENCE) for i in range(6)], Deadline())
    finally:
        await judge.aclose()
    assert [o.verdict for o in out] == [Verdict.SUPPORTED] * 6
    assert state["max"] == 2


async def test_ready_follows_vllm_health(fake, judge):
    assert await judge.ready()
    fake.faults.dead_engine = True
    assert not await judge.ready()


@pytest.mark.parametrize("top", ["absent", None, [], [{"token": "A", "logprob": -1.6}]])
def test_missing_or_short_top_logprobs_is_an_error_not_certainty(top):
    first = {"token": "A", "logprob": -1.6}
    if top != "absent":
        first["top_logprobs"] = top
    data = {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [first]}}]}
    with pytest.raises(JudgeOutputError, match="top_logprobs"):
        parse_judgement(data)


@pytest.mark.parametrize("listed", [True, False])
def test_a_label_chosen_from_outside_the_models_top_tokens_is_an_error_not_certainty(listed):
    # The model wants prose: its 20 likeliest tokens are words, and constrained decoding picked "A" from below them
    # (vLLM lists the sampled token among top_logprobs in place of the 20th; shown both ways). "B" and "C" may be
    # as likely as "A": taking them as -9999 would report P(supported) = 1.0.
    prose = [{"token": f"word{k}", "logprob": -0.5 - 0.2 * k} for k in range(20)]
    first = {"token": "A", "logprob": -9.0}
    first["top_logprobs"] = [dict(first), *prose[:19]] if listed else prose
    data = {"choices": [{"message": {"content": "A"}, "logprobs": {"content": [first]}}]}
    with pytest.raises(JudgeOutputError, match="ranks below all 19|ranks below all 20"):
        parse_judgement(data)
    # The same list with "A" the model's own first choice: the absent labels are below the 20th token, -9999.
    first = {"token": "A", "logprob": -0.1}
    first["top_logprobs"] = [dict(first), *prose[:19]]
    verdict, probs = parse_judgement({"choices": [{"message": {"content": "A"}, "logprobs": {"content": [first]}}]})
    assert verdict is Verdict.SUPPORTED and probs.supported == 1.0


async def test_a_claim_without_evidence_is_not_judged_by_the_llm():
    from server.backends.vllm_client import VllmClient
    from server.backends.judges.vllm_judge import VllmJudge
    from server.pipeline.types import Tier
    judge = VllmJudge(VllmClient("http://127.0.0.1:9/v1"), "judge")
    try:
        (out,) = await judge.judge([JudgeItem(CLAIM, ())], Deadline())
    finally:
        await judge.aclose()
    assert out.verdict is Verdict.NOT_ENOUGH_INFO and out.tier is Tier.NONE and out.llm_calls == 0
