"""The Python clients as a library: a client built outside an event loop, errors that pickle, timeouts, a closed
client, reloads not retried, and the server's RetryInfo delay waited in full within the deadline."""

from __future__ import annotations

import asyncio
import copy
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import grpc
import pytest

from client import AsyncVerifierClient, VerifierClient, VerifierError
from client.errors import VerifierError as _Error  # (the same class)
from server.app import start_server
from tests.conftest import make_settings


def _raise_verifier_error():
    raise VerifierError("UNAVAILABLE", "BACKEND_UNAVAILABLE", "vLLM is down", {"request_id": "r1"},
                        [("steps[0]", "is empty")], 1.5)


def test_a_verifier_error_pickles_copies_and_hashes():
    error = VerifierError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "bad", {"request_id": "r"}, [("a", "b")], None)
    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert (clone.code, clone.reason, clone.message, clone.metadata, clone.field_violations) == \
            (error.code, error.reason, error.message, error.metadata, error.field_violations)
        assert str(clone) == str(error)
    assert len({error, error}) == 1  # hashable (by identity, as exceptions are)
    with ProcessPoolExecutor(1) as pool:  # a worker that raised one broke the pool (BrokenProcessPool)
        with pytest.raises(_Error) as info:
            pool.submit(_raise_verifier_error).result(timeout=60)
    assert info.value.retry_delay_s == 1.5 and info.value.field_violations == [("steps[0]", "is empty")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on its own loop thread (the clients here run their own event loops)."""
    import threading

    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    async def main():
        box["server"] = await start_server(make_settings(tmp_path_factory.mktemp("kgv-cache"), kb={"enabled": False},
                                                         judge={"backend": "baseline"}), ["127.0.0.1:0"])
        started.set()
        box["stop"] = asyncio.Event()
        await box["stop"].wait()
        await box["server"].stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(120)
    yield box["server"]
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(60)


def test_an_async_client_built_outside_a_loop_serves_one_asyncio_run_after_another(server):
    client = AsyncVerifierClient(server.addresses[0], retries=0)  # at module level, as a script would

    async def health():
        return await client.health("")

    assert asyncio.run(health()) in ("SERVING", "NOT_SERVING")  # "attached to a different loop" before
    assert asyncio.run(health()) in ("SERVING", "NOT_SERVING")  # a second asyncio.run: "Event loop is closed"
    asyncio.run(client.close())

    async def after_close():
        return await client.health("")

    with pytest.raises(VerifierError) as info:
        asyncio.run(after_close())
    assert info.value.reason == "CLIENT_CLOSED"


def test_a_closed_sync_client_raises_a_verifier_error(server):
    client = VerifierClient(server.addresses[0], retries=0)
    client.close()
    with pytest.raises(VerifierError) as info:
        client.kb_info()
    assert info.value.reason == "CLIENT_CLOSED"


@pytest.mark.parametrize("timeout_s", [0, -1.0])
def test_a_timeout_that_is_not_positive_is_refused_not_the_default(server, timeout_s):
    with VerifierClient(server.addresses[0], retries=0) as client:
        with pytest.raises(ValueError, match="timeout_s must be positive"):
            client.kb_info(timeout_s=timeout_s)


class _Unavailable(grpc.aio.AioRpcError):
    def __init__(self):
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "lost", None)


async def test_a_reload_is_not_retried_and_a_retry_waits_the_servers_whole_delay(monkeypatch):
    calls = []

    class Stub:
        async def ReloadKnowledgeBase(self, request, timeout=None, metadata=None):
            calls.append(time.monotonic())
            raise _Unavailable()

        async def GetKnowledgeBaseInfo(self, request, timeout=None, metadata=None):
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise _Unavailable()
            from kgverify.v1 import knowledge_base_service_pb2
            return knowledge_base_service_pb2.GetKnowledgeBaseInfoResponse(kb_id="kb")

    shed = VerifierError("RESOURCE_EXHAUSTED", "OVERLOADED", "busy", {}, [], 2.5)
    monkeypatch.setattr(VerifierError, "from_rpc_error", classmethod(
        lambda cls, exc: shed if calls and len(calls) == 1 and shed.retry_delay_s else
        VerifierError("UNAVAILABLE", "BACKEND_UNAVAILABLE", "lost")))
    monkeypatch.setattr(AsyncVerifierClient, "_kb", property(lambda self: Stub()))
    client = AsyncVerifierClient("127.0.0.1:1", retries=3, timeout_s=30)
    with pytest.raises(VerifierError):
        await client.reload_kb()
    assert len(calls) == 1  # a lost answer to a reload is not sent again
    calls.clear()
    info = await client.kb_info()
    assert info["kb_id"] == "kb" and len(calls) == 2
    assert calls[1] - calls[0] >= 2.5  # the server's RetryInfo delay, not the client's 2 s cap
    await client.close()


def test_sequences_of_steps_and_choices_and_a_single_metric_name_are_taken_as_a_caller_means_them():
    from client import requests as rq

    request = rq.score_chain_request({"question": "Which drug?", "steps": ("Insulin lowers glucose.", "So insulin."),
                                      "answer": "A", "choices": ("insulin", "metformin"), "metrics": "ki"})
    assert list(request.steps) == ["Insulin lowers glucose.", "So insulin."]
    assert list(request.choices) == ["insulin", "metformin"] and len(request.metrics) == 1
    with pytest.raises(VerifierError, match="must be a list of strings"):
        rq.score_chain_request({"steps": "Insulin lowers glucose."})  # a bare string is no list of steps
