"""InfoGain review 8: what vLLM's /v1/models says of the model: not served is UNAVAILABLE (as the HTTP 404 it
would get), and a listing without max_model_len (a gateway's) uses KGV_LM__MAX_CONTEXT_TOKENS."""

from __future__ import annotations

import json

import httpx
import pytest

from server.backends.lm.causal_lm import LmEstimator
from server.backends.lm.vllm_lm import VllmCausalLm
from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.errors import BackendUnavailableError
from server.pipeline.info_gain import score_info_gain
from server.pipeline.types import ChainStatus
from tests.unit.test_info_gain import make_deps, request

STEPS = ["first step", "second step", "a third, much longer step " * 4]


def transport(cards: list) -> httpx.MockTransport:
    """A vLLM-like server (one character per token, -1 nat per prompt token) whose /v1/models lists `cards`."""

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": cards})
        body = json.loads(req.content)
        if req.url.path == "/tokenize":
            tokens = [3 + ord(c) % 250 for c in body["prompt"]]
            return httpx.Response(200, json={"tokens": ([1] if body["add_special_tokens"] else []) + tokens})
        if req.url.path == "/v1/completions":
            choices = [{"index": i, "prompt_logprobs": [None] + [{str(t): {"logprob": -1.0}} for t in p[1:]]}
                       for i, p in enumerate(body["prompt"])]
            return httpx.Response(200, json={"choices": choices, "usage": {"prompt_tokens": 1}})
        return httpx.Response(404, json={"detail": "Not Found"})

    return httpx.MockTransport(handler)


def estimator(cards: list, max_context_tokens: int | None = None) -> LmEstimator:
    client = VllmClient("http://vllm.test/v1", max_retries=0, transport=transport(cards))
    return LmEstimator(VllmCausalLm(client, "served"), max_context_tokens=max_context_tokens)


async def test_a_model_vllm_does_not_list_is_unavailable():
    """vLLM serving another model (restarted with another --served-model-name) is down for this service, as the
    HTTP 404 of the request itself would say: the call was answered, every gain null as an 'unusable answer'."""
    with pytest.raises(BackendUnavailableError, match="does not serve a model named 'served'"):
        await score_info_gain(request(STEPS), make_deps(estimator([{"id": "other", "max_model_len": 4096}])),
                              NO_DEADLINE)


async def test_a_listing_without_max_model_len_uses_the_context_setting():
    """A gateway's /v1/models (LiteLLM, an API gateway) has no max_model_len: KGV_LM__MAX_CONTEXT_TOKENS was
    ignored and every gain of every chain was null ('does not serve a model named ... with a max_model_len')."""
    result = await score_info_gain(request(STEPS), make_deps(estimator([{"id": "served"}], 60)), NO_DEADLINE)
    assert [s.gain is not None for s in result.steps] == [True, True, False]
    assert "context_overflow" in result.steps[2].flags and "context is 60 tokens" in result.steps[2].null_reason
    unset = await score_info_gain(request(STEPS), make_deps(estimator([{"id": "served"}])), NO_DEADLINE)
    assert unset.status is ChainStatus.PARTIAL and all(s.gain is None for s in unset.steps)
    assert "set KGV_LM__MAX_CONTEXT_TOKENS" in unset.steps[0].null_reason


async def test_a_model_list_of_the_wrong_shape_is_an_unusable_answer():
    """A list of names instead of model objects raised AttributeError: INTERNAL, not an unusable answer."""
    result = await score_info_gain(request(STEPS), make_deps(estimator(["served"])), NO_DEADLINE)
    assert result.status is ChainStatus.PARTIAL and "entries are not objects" in result.steps[0].null_reason
