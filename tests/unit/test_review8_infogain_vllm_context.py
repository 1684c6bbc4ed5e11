"""InfoGain review 8: vLLM's max_model_len is read again, so a vLLM restarted with another --max-model-len is
followed (the first value was kept until the verifier restarted)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from server.backends.lm import vllm_lm  # noqa: E402
from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.vllm_lm import VllmCausalLm  # noqa: E402
from server.backends.vllm_client import VllmClient  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from server.pipeline.info_gain import score_info_gain  # noqa: E402
from server.pipeline.types import ChainStatus  # noqa: E402
from tests.contract.test_vllm_lm import fake_server  # noqa: E402
from tests.helpers.tiny_lm import chain, one_torch_thread  # noqa: E402
from tests.unit.test_info_gain import make_deps, request  # noqa: E402

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
STEPS = chain(6, seed=1)


def scored(result) -> list[bool]:
    return [s.gain is not None for s in result.steps]


async def test_a_shorter_max_model_len_after_a_vllm_restart_is_followed(monkeypatch):
    """vLLM restarted with --max-model-len 64: every later call sent the prompts the old 4096 allowed, vLLM rejected
    each request (HTTP 400), and every gain of every chain was null (unusable), for as long as the verifier ran."""
    monkeypatch.setattr(vllm_lm, "CONTEXT_TTL_S", 0.0, raising=False)
    with fake_server(max_model_len=4096) as fake:
        estimator = LmEstimator(VllmCausalLm(VllmClient(fake.base_url, max_retries=0), "tiny"))
        deps = make_deps(estimator)
        try:
            before = await score_info_gain(request(STEPS), deps, NO_DEADLINE)
            fake.max_model_len = 64
            after = await score_info_gain(request(STEPS), deps, NO_DEADLINE)
            fake.max_model_len = 4096
            again = await score_info_gain(request(STEPS), deps, NO_DEADLINE)
        finally:
            await estimator.aclose()
    assert before.status is ChainStatus.OK
    assert after.status is ChainStatus.PARTIAL
    assert scored(after)[0] and not scored(after)[-1]  # the prefixes that fit 63 tokens are scored
    assert all("context_overflow" in s.flags for s in after.steps if s.gain is None)
    assert "context is 63 tokens" in next(s.null_reason for s in after.steps if s.gain is None)
    assert again.status is ChainStatus.OK and again.info_gain == pytest.approx(before.info_gain)


async def test_a_rejected_request_makes_the_next_call_read_max_model_len_again(monkeypatch):
    """Within the re-read interval, the request vLLM rejects is the signal: the next call reads it again."""
    monkeypatch.setattr(vllm_lm, "CONTEXT_TTL_S", 3600.0, raising=False)
    with fake_server(max_model_len=4096) as fake:
        estimator = LmEstimator(VllmCausalLm(VllmClient(fake.base_url, max_retries=0), "tiny"))
        deps = make_deps(estimator)
        try:
            await score_info_gain(request(STEPS), deps, NO_DEADLINE)
            fake.max_model_len = 64
            first = await score_info_gain(request(STEPS), deps, NO_DEADLINE)
            second = await score_info_gain(request(STEPS), deps, NO_DEADLINE)
        finally:
            await estimator.aclose()
    assert not any(scored(first)) and "unusable" in first.steps[0].null_reason  # sent with the old length
    assert scored(second)[0] and not scored(second)[-1]
    assert all("context_overflow" in s.flags for s in second.steps if s.gain is None)


async def test_concurrent_calls_read_max_model_len_once():
    """The windows of a long chain start together, after the full pass: each one read /v1/models (250 requests
    at once for a 256-step chain whose full pass took longer than the re-read interval)."""
    import asyncio

    with fake_server(max_model_len=4096) as fake:
        lm = VllmCausalLm(VllmClient(fake.base_url, max_retries=0), "tiny")
        try:
            assert set(await asyncio.gather(*(lm.context_tokens(NO_DEADLINE) for _ in range(20)))) == {4095}
        finally:
            await lm.aclose()
    assert fake.paths().count("/v1/models") == 1
