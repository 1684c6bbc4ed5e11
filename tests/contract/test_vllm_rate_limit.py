"""vLLM behind a gateway or rate limiter: HTTP 429 (and 503, or a proxy's 408) with Retry-After, against the fake vLLM server."""

import email.utils
import time

import pytest

from server.backends.vllm_client import VllmClient, _retry_after_s
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendUnavailableError
from tests.fakes.vllm_server import Faults, FakeVllmServer, label_choice_reply

BODY = {"model": "judge", "messages": [{"role": "user", "content": "A, B or C?"}], "max_tokens": 1}


def _fake(**faults) -> FakeVllmServer:
    return FakeVllmServer(chat=lambda body: label_choice_reply({"A": 0.7, "B": 0.2, "C": 0.1}),
                          faults=Faults(**faults))


def _generation_requests(fake: FakeVllmServer) -> int:
    return sum(path == "/v1/chat/completions" for path in fake.paths())


async def _call(fake: FakeVllmServer, deadline: Deadline | None = None, **client):
    vllm = VllmClient(fake.base_url, **{"backoff_s": 0.01, **client})
    try:
        return await vllm.chat_completions(BODY, deadline or Deadline.after(None))
    finally:
        await vllm.aclose()


@pytest.mark.parametrize("status", [429, 503, 408])
async def test_a_passing_rate_limit_is_retried_and_the_call_succeeds(status):
    with _fake(http_status=status, retry_after="0", fail_times=2) as fake:
        data = await _call(fake)
    assert data["choices"][0]["message"]
    assert _generation_requests(fake) == 3


async def test_retry_after_seconds_are_waited_for():
    with _fake(http_status=429, retry_after="1", fail_times=1) as fake:
        began = time.monotonic()
        await _call(fake)
        waited = time.monotonic() - began
    assert waited >= 0.9  # the backoff alone would have been 0.01 s
    assert _generation_requests(fake) == 2


async def test_rate_limit_that_outlasts_the_retries_is_unavailable_and_says_why():
    with _fake(http_status=429) as fake:
        with pytest.raises(BackendUnavailableError, match="rate-limiting.*HTTP 429") as info:
            await _call(fake, max_retries=2)
    assert info.value.code == "UNAVAILABLE"  # retryable by clients; a cascade falls back to its first tier
    assert _generation_requests(fake) == 3


@pytest.mark.parametrize("retry_after, deadline_s", [("120", None), ("5", 1.0)])
async def test_a_wait_longer_than_allowed_is_not_started(retry_after, deadline_s):
    with _fake(http_status=429, retry_after=retry_after) as fake:
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=f"retry after {retry_after} s"):
            await _call(fake, Deadline.after(deadline_s))
        gave_up_after = time.monotonic() - began
    assert _generation_requests(fake) == 1
    assert gave_up_after < 0.9  # gave up at once, not after sleeping nor at the 1 s deadline


def test_retry_after_header_forms():
    assert _retry_after_s(None) is None
    assert _retry_after_s("") is None
    assert _retry_after_s(" 7 ") == 7.0
    assert _retry_after_s("soon") is None
    assert _retry_after_s("-3") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= _retry_after_s(later) <= 31
    assert _retry_after_s(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
