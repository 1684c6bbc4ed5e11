"""The vLLM client against the fake vLLM server: shapes, error mapping, deadlines."""

import asyncio
import math

import pytest

from server.backends.vllm_client import VllmClient
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendResponseError, BackendTimeoutError, BackendUnavailableError
from tests.fakes.vllm_server import FakeVllmServer, label_choice_reply


def _scorer(ids):
    return [-0.5 * (i % 3) - (float("inf") if t == 13 else 0.0) for i, t in enumerate(ids[1:], 1)]


@pytest.fixture
def fake():
    server = FakeVllmServer(
        chat=lambda body: label_choice_reply({"A": 0.7, "B": 0.2, "C": 0.1}),
        scorer=_scorer,
        tokenizer=lambda text, special: ([1] if special else []) + [ord(c) % 50 + 2 for c in text],
    )
    with server:
        yield server


async def test_completions_prompt_logprobs_shape(fake):
    client = VllmClient(fake.base_url)
    try:
        data = await client.completions({"model": "judge", "prompt": [[1, 5, 13, 7]], "max_tokens": 1,
                                         "prompt_logprobs": 0})
    finally:
        await client.aclose()
    entries = data["choices"][0]["prompt_logprobs"]
    assert entries[0] is None
    assert list(entries[2]) == ["13"]
    assert entries[2]["13"]["logprob"] == -9999.0  # -inf clamped as vLLM does
    assert math.isclose(entries[1]["5"]["logprob"], -0.5)


async def test_chat_structured_choice_and_logprobs(fake):
    client = VllmClient(fake.base_url)
    try:
        data = await client.chat_completions({
            "model": "judge", "messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 3,
            "structured_outputs": {"choice": ["B", "C"]}})
    finally:
        await client.aclose()
    choice = data["choices"][0]
    assert choice["message"]["content"] == "B"  # constrained away from the unconstrained favourite "A"
    tops = {t["token"]: t["logprob"] for t in choice["logprobs"]["content"][0]["top_logprobs"]}
    assert set(tops) == {"A", "B", "C"}


async def test_tokenize_and_models(fake):
    client = VllmClient(fake.base_url)
    try:
        assert await client.tokenize("ab", add_special_tokens=True) == [1, ord("a") % 50 + 2, ord("b") % 50 + 2]
        assert (await client.models())[0]["max_model_len"] == 2048
        assert await client.health()
        fake.faults.dead_engine = True
        assert not await client.health()
    finally:
        await client.aclose()


async def test_unreachable_is_unavailable():
    server = FakeVllmServer().start()
    url = server.base_url
    server.stop()
    client = VllmClient(url, max_retries=1, backoff_s=0.01)
    try:
        with pytest.raises(BackendUnavailableError):
            await client.completions({"prompt": [1, 2]})
    finally:
        await client.aclose()


async def test_slow_backend_times_out_within_deadline(fake):
    fake.faults.delay_s = 1.0
    client = VllmClient(fake.base_url, timeout_s=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(BackendTimeoutError):
            await client.completions({"prompt": [1, 2]}, Deadline.after(0.2))
    finally:
        await client.aclose()
    assert loop.time() - started < 0.9


async def test_malformed_and_rejected_bodies(fake):
    client = VllmClient(fake.base_url, max_retries=0)
    try:
        fake.faults.malformed_body = True
        with pytest.raises(BackendResponseError):
            await client.completions({"prompt": [1, 2], "max_tokens": 1})
        fake.faults.malformed_body = False
        with pytest.raises(BackendResponseError, match="maximum context length"):
            await client.completions({"prompt": [1] * 5000, "max_tokens": 1})
        fake.faults.http_status = 503
        with pytest.raises(BackendUnavailableError):
            await client.completions({"prompt": [1, 2], "max_tokens": 1})
    finally:
        await client.aclose()


async def test_a_model_or_route_vllm_does_not_serve_is_unavailable_not_a_bad_answer(fake):
    """HTTP 404 fails every request alike (wrong model name, base URL without /v1): the backend is down for us."""
    client = VllmClient(fake.base_url, max_retries=0)
    wrong_route = VllmClient(fake.base_url.removesuffix("/v1"), max_retries=0)
    try:
        with pytest.raises(BackendUnavailableError, match="HTTP 404.*model `other` does not exist"):
            await client.chat_completions({"model": "other", "messages": [{"role": "user", "content": "x"}]})
        with pytest.raises(BackendUnavailableError, match=r"HTTP 404 on /completions\): Not Found"):
            await wrong_route.completions({"prompt": [1, 2], "max_tokens": 1})
    finally:
        await client.aclose()
        await wrong_route.aclose()


@pytest.mark.parametrize("body", [{"error": "engine overloaded"}, ["not", "an", "object"], b"<html>Bad Request</html>"])
async def test_error_bodies_of_any_shape_give_the_status_and_message(fake, body):
    client = VllmClient(fake.base_url, max_retries=0)
    try:
        fake.faults.http_status, fake.faults.error_body = 400, body
        with pytest.raises(BackendResponseError, match="HTTP 400") as caught:
            await client.completions({"prompt": [1, 2], "max_tokens": 1})
        assert caught.value.reason == "BACKEND_REJECTED"
        if isinstance(body, dict):
            assert "engine overloaded" in caught.value.message
    finally:
        await client.aclose()


async def test_a_cache_salt_goes_with_every_generation_request(fake):
    """vLLM's prefix cache is shared by all its clients: the salt keeps this service's entries apart."""
    from server.backends.judges.vllm_judge import judge_from_settings
    from server.backends.splitters.llm_decomposer import decomposer_from_settings
    from server.config import Settings

    client = VllmClient(fake.base_url, max_retries=0, cache_salt="tenant-a")
    try:
        await client.chat_completions({"model": "judge", "messages": [{"role": "user", "content": "x"}]})
        await client.completions({"prompt": [1, 2], "max_tokens": 1})
        await client.completions({"prompt": [1, 2], "max_tokens": 1, "cache_salt": "own"})
    finally:
        await client.aclose()
    sent = [body.get("cache_salt") for path, body in fake.requests if path.endswith("completions")]
    assert sent == ["tenant-a", "tenant-a", "own"]

    settings = Settings(judge={"backend": "vllm", "base_url": fake.base_url, "cache_salt": "verifier"},
                        splitter={"backend": "llm"})
    judge = judge_from_settings(settings.judge)
    decomposer = decomposer_from_settings(settings, None)
    assert judge.client.cache_salt == decomposer.client.cache_salt == "verifier"  # the judge's vLLM, its salt
    own = Settings(judge={"cache_salt": "verifier"}, splitter={"base_url": fake.base_url})
    assert decomposer_from_settings(own, None).client.cache_salt is None  # another vLLM: no borrowed salt
    for closing in (judge.aclose(), decomposer.client.aclose()):
        await closing


async def test_the_api_key_goes_from_the_settings_to_vllm_and_stays_masked(monkeypatch):
    from server.config import Settings

    monkeypatch.setenv("KGV_JUDGE__API_KEY", "sk-s3cret")
    settings = Settings()
    assert "sk-s3cret" not in settings.model_dump_json() and "sk-s3cret" not in repr(settings)
    with FakeVllmServer(api_key="sk-s3cret") as fake:
        client = VllmClient(fake.base_url, settings.judge.api_key)
        try:
            assert (await client.models())[0]["id"] == "judge"
            assert await client.serves("judge")
        finally:
            await client.aclose()


async def test_a_refused_api_key_is_an_unavailable_backend_and_logged_once(caplog):
    with FakeVllmServer(api_key="right") as fake:
        client = VllmClient(fake.base_url, "wrong", max_retries=0)
        try:
            with pytest.raises(BackendUnavailableError,
                               match=r"refuses this server's API key \(HTTP 401 on /v1/chat/completions\)"):
                await client.chat_completions({"model": "judge", "messages": [{"role": "user", "content": "x"}]})
            with caplog.at_level("INFO", logger="server.backends.vllm_client"):
                assert not await client.serves("judge") and not await client.serves("judge")
        finally:
            await client.aclose()
    logged = [r.getMessage() for r in caplog.records if "API key" in r.getMessage()]
    assert len(logged) == 1 and "HTTP 401 on /v1/models" in logged[0]


async def test_serves_logs_why_vllm_is_not_usable_once_per_change_and_the_recovery(fake, caplog):
    client = VllmClient(fake.base_url)
    try:
        with caplog.at_level("INFO", logger="server.backends.vllm_client"):
            fake.faults.dead_engine = True
            assert not await client.serves("judge") and not await client.serves("judge")
            fake.faults.dead_engine = False
            assert await client.serves("judge") and await client.serves("judge")
            assert not await client.serves("other")
    finally:
        await client.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "server.backends.vllm_client"]
    assert messages == [f"vLLM at {fake.root_url} answers /health with HTTP 503 (still starting, or its engine died)",
                        f"vLLM at {fake.base_url} serves 'judge' again",
                        f"vLLM at {fake.base_url} serves ['judge'], not 'other': set the model setting to one of "
                        "them, or start vLLM with --served-model-name other"]


async def test_an_unreachable_vllm_is_logged_with_its_address_and_cause(caplog):
    server = FakeVllmServer().start()
    url, root = server.base_url, server.root_url
    server.stop()
    client = VllmClient(url)
    try:
        with caplog.at_level("INFO", logger="server.backends.vllm_client"):
            assert not await client.serves("judge")
    finally:
        await client.aclose()
    [message] = [r.getMessage() for r in caplog.records if r.name == "server.backends.vllm_client"]
    assert message.startswith(f"vLLM at {root} is unreachable (ConnectError: ")


async def test_a_dead_engine_empty_http_500_is_unavailable_not_a_rejected_request(fake):
    # vLLM 0.12: after EngineDeadError every generation answers an empty HTTP 500 and /health 503.
    fake.faults.dead_engine = True
    client = VllmClient(fake.base_url, max_retries=0)
    try:
        with pytest.raises(BackendUnavailableError):
            await client.chat_completions({"model": "judge", "messages": []})
        fake.faults.dead_engine = False
        fake.faults.http_status = 500  # a 500 from a healthy server stays this request's error
        with pytest.raises(BackendResponseError):
            await client.chat_completions({"model": "judge", "messages": []})
    finally:
        await client.aclose()


async def test_health_probe_does_not_wait_for_a_busy_generation_pool(fake):
    fake.faults.delay_s = 1.5
    client = VllmClient(fake.base_url, max_concurrency=1)
    try:
        busy = asyncio.create_task(client.chat_completions({"model": "judge", "messages": []}))
        await asyncio.sleep(0.3)
        assert await client.serves("judge", timeout_s=0.5)  # vLLM is busy, not down
        await busy
    finally:
        await client.aclose()


async def test_waiting_for_a_slot_respects_the_deadline_and_a_late_request_is_never_sent(fake):
    fake.faults.delay_s = 1.0
    client = VllmClient(fake.base_url, max_concurrency=1)
    try:
        busy = asyncio.create_task(client.chat_completions({"model": "judge", "messages": []}))
        await asyncio.sleep(0.1)
        sent = len(fake.requests)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(BackendTimeoutError):
            await client.chat_completions({"model": "judge", "messages": []}, Deadline.after(0.3))
        assert loop.time() - start < 0.8
        await busy
        assert len(fake.requests) == sent
    finally:
        await client.aclose()


async def test_a_url_without_scheme_is_not_retried():
    client = VllmClient("vllm:8000/v1", max_retries=2, backoff_s=5.0)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(BackendUnavailableError):
            await client.chat_completions({"model": "judge", "messages": []})
        assert loop.time() - start < 1.0
    finally:
        await client.aclose()


async def test_client_visible_messages_name_no_vllm_address_nor_its_server_error_text(fake, caplog):
    client = VllmClient(fake.base_url, max_retries=0)
    try:
        fake.faults.http_status, fake.faults.error_body = 500, {"error": {"message": "Traceback at /opt/vllm/x.py"}}
        with caplog.at_level("WARNING", logger="server.backends.vllm_client"):
            with pytest.raises(BackendResponseError) as caught:
                await client.chat_completions({"model": "judge", "messages": []})
        assert caught.value.message == "vLLM answered HTTP 500 on /v1/chat/completions"
        assert any("Traceback" in r.getMessage() for r in caplog.records)  # the operator's log has it
        fake.faults.http_status = 503
        with pytest.raises(BackendUnavailableError) as caught:
            await client.chat_completions({"model": "judge", "messages": []})
        assert "127.0.0.1" not in caught.value.message
    finally:
        await client.aclose()
    with pytest.raises(BackendUnavailableError) as caught:
        await _call_an_unreachable_vllm()
    assert "127.0.0.1" not in caught.value.message and "unreachable" in caught.value.message


async def _call_an_unreachable_vllm():
    server = FakeVllmServer().start()
    url = server.base_url
    server.stop()
    client = VllmClient(url, max_retries=0)
    try:
        await client.chat_completions({"model": "judge", "messages": []})
    finally:
        await client.aclose()


async def test_a_large_reply_is_parsed_off_the_event_loop(fake, monkeypatch):
    """prompt_logprobs of a long chain are megabytes of JSON (0.3 s to parse 11 MB): not on the event loop."""
    import threading

    from server.backends import vllm_client

    threads = []
    real = vllm_client._json_or_error

    def recording(response, route):
        threads.append((len(response.content), threading.current_thread() is threading.main_thread()))
        return real(response, route)

    monkeypatch.setattr(vllm_client, "_json_or_error", recording)
    client = VllmClient(fake.base_url)
    try:
        small = await client.completions({"model": "judge", "prompt": [[1, 5, 7]], "max_tokens": 1,
                                          "prompt_logprobs": 0})
        long_prompt = [1] + [5 + i % 40 for i in range(2000)]  # the fake serves 2,048 tokens
        large = await client.completions({"model": "judge", "prompt": [long_prompt] * 4, "max_tokens": 1,
                                          "prompt_logprobs": 0})
    finally:
        await client.aclose()
    assert len(small["choices"][0]["prompt_logprobs"]) == 3
    assert [len(c["prompt_logprobs"]) for c in large["choices"]] == [2001] * 4
    (small_bytes, small_on_loop), (large_bytes, large_on_loop) = threads
    assert small_bytes < vllm_client.LARGE_BODY_BYTES < large_bytes
    assert small_on_loop and not large_on_loop


def _connect_timeouts(seen):
    import httpx

    def handler(request):
        seen.append(request.url.path)
        raise httpx.ConnectTimeout("timed out", request=request)
    return httpx.MockTransport(handler)


async def test_no_connection_within_the_timeout_is_unreachable_not_a_slow_answer():
    """A host that is down or a firewall dropping packets: every connect times out. That backend is
    unreachable (UNAVAILABLE, the cascade degrades), as a refused connection is, not a slow answer."""
    seen: list[str] = []
    client = VllmClient("http://vllm:8000/v1", timeout_s=0.5, max_retries=2, backoff_s=0.01,
                        transport=_connect_timeouts(seen))
    try:
        with pytest.raises(BackendUnavailableError, match=r"unreachable \(no connection within 0.5 s\)") as caught:
            await client.chat_completions({"model": "judge", "messages": []}, Deadline.after(30))
    finally:
        await client.aclose()
    assert seen == ["/v1/chat/completions"] * 3  # retried like any failed connect
    assert "vllm:8000" not in caught.value.message


async def test_a_connect_cut_short_by_the_deadline_is_a_timeout():
    seen: list[str] = []
    client = VllmClient("http://vllm:8000/v1", timeout_s=30, max_retries=0, transport=_connect_timeouts(seen))
    try:
        with pytest.raises(BackendTimeoutError):
            await client.chat_completions({"model": "judge", "messages": []}, Deadline.after(0.5))
    finally:
        await client.aclose()
    assert len(seen) == 1


async def test_a_500_from_a_healthy_vllm_is_tried_once_more(fake):
    """vLLM answers a generation that failed in the engine (finish_reason "error") with HTTP 500 while /health is
    fine, and calls it retryable: one more try, then the request's own error (never a retry storm)."""
    client = VllmClient(fake.base_url, max_retries=2, backoff_s=0.01)
    try:
        fake.faults.http_status, fake.faults.fail_times = 500, 1
        data = await client.chat_completions({"model": "judge", "messages": [{"role": "user", "content": "x"}]})
        assert data["choices"][0]["message"]["content"]
        assert [path for path, _ in fake.requests].count("/v1/chat/completions") == 2
        fake.requests.clear()
        fake.faults.http_status, fake.faults.fail_times = 500, None
        with pytest.raises(BackendResponseError, match="HTTP 500 on /v1/chat/completions"):
            await client.chat_completions({"model": "judge", "messages": []})
        assert [path for path, _ in fake.requests].count("/v1/chat/completions") == 2
    finally:
        await client.aclose()


async def test_rejections_name_the_route(fake):
    client = VllmClient(fake.base_url, max_retries=0)
    try:
        with pytest.raises(BackendUnavailableError, match=r"HTTP 404 on /v1/chat/completions\): .*`other`"):
            await client.chat_completions({"model": "other", "messages": [{"role": "user", "content": "x"}]})
        with pytest.raises(BackendResponseError, match=r"HTTP 400 on /v1/completions\): .*maximum context length"):
            await client.completions({"prompt": [1] * 5000, "max_tokens": 1})
        fake.faults.http_status = 401
        with pytest.raises(BackendUnavailableError, match=r"HTTP 401 on /v1/completions\)"):
            await client.completions({"prompt": [1, 2], "max_tokens": 1})
    finally:
        await client.aclose()
