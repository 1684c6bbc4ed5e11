"""InfoGain review 8: a vLLM reply of the wrong shape is an unusable answer (null gains with the reason, the chain
partial), never an exception that fails the call INTERNAL."""

from __future__ import annotations

import json
from typing import Callable

import httpx
import pytest

from server.backends.lm.causal_lm import LmEstimator
from server.backends.lm.vllm_lm import VllmCausalLm
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.info_gain import score_info_gain
from server.pipeline.types import ChainStatus
from tests.unit.test_info_gain import make_deps, request

STEPS = ["first step", "second step"]


def tokens(text: str) -> list[int]:
    return [3 + ord(c) % 250 for c in text]


def prompt_logprobs_reply(body: dict) -> dict:
    choices = [{"index": i, "prompt_logprobs": [None] + [{str(t): {"logprob": -1.0}} for t in p[1:]]}
               for i, p in enumerate(body["prompt"])]
    return {"choices": choices, "usage": {"prompt_tokens": sum(map(len, body["prompt"]))}}


def generated_reply(body: dict) -> dict:
    wanted = body["logprob_token_ids"][0]
    return {"choices": [{"index": 0, "logprobs": {"top_logprobs": [{f"token_id:{wanted}": -1.0}]}}],
            "usage": {"prompt_tokens": len(body["prompt"]), "prompt_tokens_details": {"cached_tokens": 0}}}


def estimator(reply: Callable[[dict], dict], scoring: str = "prompt_logprobs") -> LmEstimator:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "served", "max_model_len": 4096}]})
        body = json.loads(req.content)
        if req.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": ([1] if body["add_special_tokens"] else []) +
                                             tokens(body["prompt"])})
        return httpx.Response(200, json=reply(body))

    client = VllmClient("http://vllm.test/v1", max_retries=0, transport=httpx.MockTransport(handler))
    return LmEstimator(VllmCausalLm(client, "served", scoring=scoring))


def reindexed(index):
    def reply(body):
        data = prompt_logprobs_reply(body)
        for choice in data["choices"]:
            choice["index"] = index
        return data
    return reply


def with_usage(usage):
    def reply(body):
        return {**prompt_logprobs_reply(body), "usage": usage}
    return reply


def cached_with(change):
    def reply(body):
        data = generated_reply(body)
        change(data)
        return data
    return reply


GOOD = {"prompt_logprobs": prompt_logprobs_reply, "cached": generated_reply}
BAD = {
    "choices indexed null": ("prompt_logprobs", reindexed(None), "not indexed"),
    "choices indexed by string": ("prompt_logprobs", reindexed("0"), "not indexed"),
    "usage is a list": ("prompt_logprobs", with_usage([1, 2]), None),
    "cached_tokens is a string": ("cached", cached_with(lambda d: d["usage"]["prompt_tokens_details"].update(
        cached_tokens="all")), None),
    "logprobs is a list": ("cached", cached_with(lambda d: d["choices"][0].update(logprobs=[{"token_id:1": -1.0}])), "ignored"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_reply_of_the_wrong_shape_is_an_unusable_answer(case):
    """Before: TypeError ('<' between NoneType and NoneType; str and int), AttributeError ('list' has no 'get'),
    ValueError (int('all')) — each an INTERNAL error for the whole call."""
    scoring, reply, fault = BAD[case]
    result = await score_info_gain(request(STEPS), make_deps(estimator(reply, scoring)), NO_DEADLINE)
    if fault is None:  # an unreadable usage block only loses the prefill count
        assert result.status is ChainStatus.OK
        good = await score_info_gain(request(STEPS), make_deps(estimator(GOOD[scoring], scoring)), NO_DEADLINE)
        assert [s.nll for s in result.steps] == [s.nll for s in good.steps]
        return
    assert result.status is ChainStatus.PARTIAL and all(s.gain is None for s in result.steps)
    assert all("unusable" in s.null_reason and fault in s.null_reason for s in result.steps)
