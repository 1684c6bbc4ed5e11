"""InfoGain review: a failed vLLM request ends the InfoGain call's other requests instead of leaving them running."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("torch")

from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.vllm_lm import VllmCausalLm  # noqa: E402
from server.backends.vllm_client import VllmClient  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from server.pipeline.errors import BackendResponseError  # noqa: E402
from server.pipeline.info_gain import gather_or_cancel  # noqa: E402
from tests.contract.test_vllm_lm import QUESTION, fake_server, model_scorer  # noqa: E402
from tests.helpers.tiny_lm import answer_of_tokens, chain, load_tiny_lm, one_torch_thread  # noqa: E402

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def completions(fake) -> int:
    return sum(1 for path, _ in fake.requests if path == "/v1/completions")


async def test_a_bad_answer_stops_the_other_cached_scoring_requests():
    """`cached` scoring sends (n+1) x answer-tokens requests; one impossible log-probability failed the call,
    and the other 50 requests of this 55-request job were still sent to vLLM afterwards, for nobody."""
    _, tok = load_tiny_lm("llama")
    calls = {"n": 0}

    def scorer(ids):
        calls["n"] += 1
        if calls["n"] in (3, 4):  # the second request: its requested token gets log-probability 0.5
            return [0.5] * (len(ids) - 1)
        time.sleep(0.02)
        return model_scorer(ids)

    with fake_server(max_model_len=4096, scorer=scorer) as fake:
        client = VllmClient(fake.base_url, max_retries=0, max_concurrency=4)
        estimator = LmEstimator(VllmCausalLm(client, "tiny", scoring="cached"))
        try:
            with pytest.raises(BackendResponseError, match="impossible"):
                await estimator.score_prefixes(QUESTION, chain(10, seed=1), answer_of_tokens(tok, 5), NO_DEADLINE)
            at_error = completions(fake)
            await asyncio.sleep(1.0)
            assert completions(fake) == at_error <= 1 + 4  # the head request and at most one slot-full
        finally:
            await estimator.aclose()


async def test_gather_or_cancel_cancels_and_awaits_the_others():
    stopped = []

    async def slow(k):
        try:
            await asyncio.sleep(10)
        finally:
            stopped.append(k)

    async def bad():
        await asyncio.sleep(0.01)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        await gather_or_cancel(slow(1), bad(), slow(2))
    assert sorted(stopped) == [1, 2]  # cancelled, and finished before the error was raised
    assert await gather_or_cancel(asyncio.sleep(0, "a"), asyncio.sleep(0, "b")) == ["a", "b"]


async def test_a_context_setting_above_max_model_len_is_capped_by_it():
    """KGV_LM__MAX_CONTEXT_TOKENS=4096 on a vLLM with max_model_len 64 sent prompts vLLM rejects (HTTP 400): the
    whole call failed with INTERNAL instead of scoring the prefixes that fit and nulling the rest."""
    with fake_server(max_model_len=64) as fake:
        client = VllmClient(fake.base_url, max_retries=0)
        estimator = LmEstimator(VllmCausalLm(client, "tiny"), max_context_tokens=4096)
        try:
            scores = await estimator.score_prefixes(QUESTION, chain(6, seed=1), "insulin", NO_DEADLINE)
            lower = await LmEstimator(VllmCausalLm(client, "tiny"), max_context_tokens=40).score_prefixes(
                QUESTION, chain(6, seed=1), "insulin", NO_DEADLINE)
        finally:
            await estimator.aclose()
    assert scores.nll[0] is not None and scores.nll[-1] is None
    assert "context is 63 tokens" in scores.overflow_reason
    assert "context is 40 tokens" in lower.overflow_reason  # a lower setting still applies
