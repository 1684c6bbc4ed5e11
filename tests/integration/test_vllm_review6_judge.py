"""The LLM judge's reasons for answers vLLM ends without a label, and for a prompt over the model's context.

Through the fake vLLM server (real HTTP, vLLM's response and error shapes); in the cascade, a prompt over the
context keeps the embedded verdict."""

from __future__ import annotations

import pytest

from server.backends.judges.cascade import CascadeJudge
from server.backends.judges.vllm_judge import JudgeOutputError, VllmJudge, parse_judgement
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Judgement, LabelProbs, Tier, Verdict
from tests.fakes.vllm_server import FakeVllmServer, label_choice_reply

EVIDENCE = (Evidence("pharm-0011", "Warfarin is a vitamin K antagonist.", "BNF", "Warfarin", 0.8,
                     EvidenceOrigin.KNOWLEDGE_BASE),)
CLAIM = "Warfarin is a direct thrombin inhibitor."


@pytest.fixture
def fake():
    with FakeVllmServer(chat=lambda body: label_choice_reply({"A": 0.1, "B": 0.85, "C": 0.05})) as server:
        yield server


async def judge_one(fake) -> object:
    judge = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
    try:
        (out,) = await judge.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline.after(10))
    finally:
        await judge.aclose()
    assert out.verdict is Verdict.ERROR and out.probabilities is None and out.tier is Tier.LLM
    assert out.llm_calls == 1
    return out


async def test_a_generation_vllm_aborted_is_named_as_such_not_as_structured_outputs_ignored(fake):
    """vLLM 0.12 ends in-flight requests with finish_reason "abort" (POST /pause?mode=abort for a weight update,
    a shutdown): HTTP 200, content "". The claim was ERROR "unconstrained output '': the server did not apply
    structured outputs", which sends the operator after a setting that is fine."""
    fake.faults.finish_before_first_token = "abort"
    out = await judge_one(fake)
    assert "finish_reason 'abort'" in out.error and "aborted on the server" in out.error
    assert "structured outputs" not in out.error


async def test_a_prompt_vllm_gave_no_room_to_answer_is_named_as_such(fake):
    """A vLLM V0 scheduler finishes a prompt over its token limit at once: finish_reason "length", no text,
    0 completion tokens. That is the prompt's length, not an unconstrained model."""
    fake.faults.finish_before_first_token = "length"
    out = await judge_one(fake)
    assert "finish_reason 'length', 0 completion tokens" in out.error and "--max-model-len" in out.error
    assert "structured outputs" not in out.error


NEW = {"error": {"message": "This model's maximum context length is 2048 tokens. However, your request has 3120 "
                            "input tokens. Please reduce the length of the input messages.",
                 "type": "BadRequestError", "param": "input_tokens", "code": 400}}
OLD = {"object": "error", "message": "This model's maximum context length is 2048 tokens. However, you requested "
                                     "3124 tokens (3120 in the messages, 4 in the completion). Please reduce the "
                                     "length of the messages or completion.",
       "type": "BadRequestError", "param": None, "code": 400}
V1 = {"error": {"message": "The decoder prompt (length 3120) is longer than the maximum model length of 2048. "
                           "Make sure that `max_model_len` is no smaller than the number of text tokens.",
                "type": "BadRequestError", "param": None, "code": 400}}


@pytest.mark.parametrize("body", [NEW, OLD, V1], ids=["error-object", "object-error", "decoder-prompt"])
async def test_a_prompt_over_the_models_context_names_the_remedy(fake, body):
    """vLLM answers HTTP 400 when the judge prompt exceeds max_model_len. Its advice, "reduce the length of the
    messages", is for its API caller (this server, which built the prompt from the claim and its evidence);
    the claim's reason says the prompt does not fit the judge model's context and names --max-model-len,
    with vLLM's own message kept, in either error body shape."""
    fake.faults.http_status, fake.faults.error_body = 400, body
    out = await judge_one(fake)
    message = body["error"]["message"] if "error" in body else body["message"]
    assert "does not fit the judge model's context" in out.error and "--max-model-len" in out.error
    assert "HTTP 400" in out.error and message[:60] in out.error


async def test_other_rejections_keep_vllms_reason_alone(fake):
    fake.faults.http_status = 400
    fake.faults.error_body = {"error": {"message": "Requested top logprobs of 20 cannot be greater than "
                                                   "max_logprobs (5)", "type": "BadRequestError", "code": 400}}
    out = await judge_one(fake)
    assert out.error == ("LLM judge: vLLM rejected the request (HTTP 400 on /v1/chat/completions): Requested top "
                         "logprobs of 20 cannot be greater than max_logprobs (5)")


def reply(content, finish, usage=True, completion_tokens=0) -> dict:
    data = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content, "reasoning_content": None},
                         "logprobs": {"content": []}, "finish_reason": finish, "stop_reason": None}]}
    if usage:
        data["usage"] = {"prompt_tokens": 2040, "completion_tokens": completion_tokens, "total_tokens": 2040}
    return data


def test_no_text_for_length_without_usage_still_names_the_prompt_length():
    with pytest.raises(JudgeOutputError, match=r"finish_reason 'length', usage not reported.*--max-model-len"):
        parse_judgement(reply("", "length", usage=False))


@pytest.mark.parametrize("content, finish, tokens", [("", "stop", 1), ("", "length", 4),
                                                      ("The claim is", "length", 4)])
def test_text_that_is_not_a_label_otherwise_still_says_structured_outputs_were_not_applied(content, finish, tokens):
    """Generated tokens that are not a label (even ones that decode to nothing) mean the constraint was not
    applied: those reasons are unchanged."""
    with pytest.raises(JudgeOutputError, match="did not apply structured outputs"):
        parse_judgement(reply(content, finish, completion_tokens=tokens))


def test_an_aborted_request_with_null_content_is_named_as_aborted():
    with pytest.raises(JudgeOutputError, match=r"finish_reason 'abort'.*content None"):
        parse_judgement(reply(None, "abort"))


class SureEmbedded:
    """An embedded tier sure of a contradiction: the cascade escalates it (contradicted always goes to the LLM)."""

    name, prompt_version = "emb", "emb-prompt"

    async def judge(self, items, deadline):
        return [Judgement(Verdict.CONTRADICTED, LabelProbs(0.05, 0.9, 0.05), Tier.EMBEDDED, evidence=EVIDENCE)
                for _ in items]

    async def ready(self):
        return True


@pytest.mark.parametrize("fault", ["http-400", "length-no-text"])
async def test_in_the_cascade_a_prompt_over_the_models_context_keeps_the_embedded_verdict(fake, fault):
    """The LLM tier cannot read a claim whose prompt does not fit its context (vLLM's HTTP 400, or a V0 scheduler's
    empty "length" finish). The LLM judge alone can only say ERROR; in the cascade the embedded verdict exists, and
    was made an ERROR (the claim dropped from KI) although the server had a verdict: it stands, DEGRADED, with the
    reason, as when the LLM tier is down. A malformed answer stays ERROR (the test below)."""
    if fault == "http-400":
        fake.faults.http_status, fake.faults.error_body = 400, NEW
    else:
        fake.faults.finish_before_first_token = "length"
    llm = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
    cascade = CascadeJudge(SureEmbedded(), llm, 0.8)
    try:
        (out,) = await cascade.judge([JudgeItem(CLAIM, EVIDENCE)], Deadline.after(10))
    finally:
        await llm.aclose()
    assert out.tier is Tier.DEGRADED and out.verdict is Verdict.CONTRADICTED
    assert out.probabilities == LabelProbs(0.05, 0.9, 0.05) and out.llm_calls == 1
    assert "LLM judge cannot read this claim" in out.error and "--max-model-len" in out.error
    assert out.error.endswith("(embedded verdict kept)") and cascade.degraded == 1


async def test_in_the_cascade_unusable_llm_output_is_still_an_error(fake):
    fake.faults.finish_before_first_token = "abort"
    llm = VllmJudge(VllmClient(fake.base_url, max_retries=0), "judge")
    try:
        (out,) = await CascadeJudge(SureEmbedded(), llm, 0.8).judge([JudgeItem(CLAIM, EVIDENCE)], Deadline.after(10))
    finally:
        await llm.aclose()
    assert out.tier is Tier.LLM and out.verdict is Verdict.ERROR and "finish_reason 'abort'" in out.error
