"""KGV_SERVER__MAX_CALL_S: a call whose client set no deadline (or a later one) is cut at the server's limit with
DEADLINE_EXCEEDED naming the setting, even where a backend does not check the deadline; a client's own shorter
deadline is left to gRPC; each stream item gets the limit while the stream itself may last."""

from __future__ import annotations

import time

import grpc
import pytest

from kgverify.v1 import common_pb2 as cpb
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc
from server.app import start_server
from server.backends import registry
from server.context import server_deadline
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge

LIMIT_S = 1.0
CONTEXT = [cpb.Passage(text="Warfarin is a vitamin K antagonist.")]


@pytest.fixture
async def served(cache_dir, monkeypatch):
    judge = FakeJudge(delay_s=30.0)  # a backend that never looks at the deadline
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge)
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}, server={"max_call_s": LIMIT_S}),
                                ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server, judge
    await server.stop(0)


def _request():
    return kpb.ScoreKnowledgeRequest(reasoning="Warfarin is a vitamin K antagonist.", context=CONTEXT)


@pytest.mark.parametrize("client_timeout", [None, 60.0])
async def test_a_call_without_a_shorter_deadline_is_cut_at_the_server_limit_naming_it(served, client_timeout):
    server, judge = served
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(_request(), timeout=client_timeout)
        elapsed = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "the server stops a call after 1 s (KGV_SERVER__MAX_CALL_S=1)" in info.value.details()
    assert judge.calls == 1 and elapsed < 20  # cut at the limit, not after the judge's 30 s


async def test_a_shorter_client_deadline_is_the_clients_own(served):
    server, _ = served
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(_request(), timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "KGV_SERVER__MAX_CALL_S" not in (info.value.details() or "")


async def test_each_stream_item_gets_the_limit_and_the_stream_goes_on(served):
    server, judge = served

    async def items():
        for i in range(2):
            yield kpb.StreamScoreChainsRequest(
                id=f"item{i}", chain=kpb.ScoreChainRequest(reasoning="Warfarin is a vitamin K antagonist.",
                                                           context=CONTEXT, metrics=[kpb.METRIC_KNOWLEDGE_INDEX]))

    got = {}
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        async for response in kgrpc.KnowledgeServiceStub(channel).StreamScoreChains(items()):
            got[response.id] = response
    assert set(got) == {"item0", "item1"}
    for response in got.values():
        assert response.status.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        assert "KGV_SERVER__MAX_CALL_S=1" in response.status.message


@pytest.mark.parametrize("client_timeout", [None, LIMIT_S + 0.5, 60.0])
async def test_the_message_gives_no_remedy_the_client_already_used(served, client_timeout):
    # a client whose own deadline is later than the limit was told to "send ... a deadline of its own"
    server, _ = served
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(_request(), timeout=client_timeout)
    details = info.value.details()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "KGV_SERVER__MAX_CALL_S=1)" in details
    assert "deadline of its own" not in details
    assert "when its client sets no deadline or a later one" in details
    assert "send a shorter request, or ask the operator to raise the setting" in details


@pytest.mark.parametrize("seconds, shown", [(600.0, "600"), (0.5, "0.5"), (1_234_567.0, "1234567"),
                                            (2_000_000.0, "2000000"), (90.25, "90.25")])
def test_the_limit_is_named_with_the_value_it_has(seconds, shown):
    assert server_deadline(seconds).limit == f"KGV_SERVER__MAX_CALL_S={shown}"


async def test_a_knowledge_base_search_is_cut_at_the_server_limit_too(cache_dir, demo_kb_path, monkeypatch):
    """SearchKnowledgeBase embedded its query within the limit but ran the search itself outside it: a slow search
    (a flat index of millions of vectors, a BM25 query over a large KB) answered whenever it finished."""
    from kb.knowledge_base import FaissKnowledgeBase
    from kgverify.v1 import knowledge_base_service_pb2 as kbpb
    from kgverify.v1 import knowledge_base_service_pb2_grpc as kbgrpc

    search = FaissKnowledgeBase.search

    def slow_search(self, *args, **kwargs):
        time.sleep(10.0)  # a search thread cannot be stopped; the call must still end at the limit
        return search(self, *args, **kwargs)

    monkeypatch.setattr(FaissKnowledgeBase, "search", slow_search)
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    server = await start_server(make_settings(cache_dir, kb={"path": demo_kb_path}, server={"max_call_s": LIMIT_S}),
                                ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await kbgrpc.KnowledgeBaseServiceStub(channel).SearchKnowledgeBase(
                    kbpb.SearchKnowledgeBaseRequest(query="warfarin reversal"), timeout=60)
            elapsed = time.monotonic() - started
    finally:
        await server.stop(0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "KGV_SERVER__MAX_CALL_S=1" in info.value.details()
    assert elapsed < 8  # at the limit, not when the 10 s search ends
