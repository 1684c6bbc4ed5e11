"""KGV_SERVER__MAX_CALL_S's DEADLINE_EXCEEDED message: a client whose own deadline is later than the limit was told
to "send ... a deadline of its own" (it had one, and no deadline of its own lets a call run past the limit); the
message names the setting's value as set (`:g` turned 1234567 into "1.23457e+06")."""

from __future__ import annotations

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
    yield server
    await server.stop(0)


@pytest.mark.parametrize("client_timeout", [None, LIMIT_S + 0.5, 60.0])
async def test_the_message_gives_no_remedy_the_client_already_used(served, client_timeout):
    async with grpc.aio.insecure_channel(served.addresses[0]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(
                kpb.ScoreKnowledgeRequest(reasoning="Warfarin is a vitamin K antagonist.", context=CONTEXT),
                timeout=client_timeout)
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
