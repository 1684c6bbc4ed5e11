"""Requests whose repeated fields are far over the limits are refused before conversion: converting 2 million empty
context passages ran on the event loop for seconds (8 million: ~30 s and 2 GB), and every other call and health
check waited behind it."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgverify.v1 import knowledge_service_pb2 as kpb
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge

PASSAGES = 2_000_000
KNOWLEDGE = "/kgverify.v1.KnowledgeService/"


def _tag(number: int, wire_type: int) -> bytes:
    return bytes([(number << 3) | wire_type])


def _many_empty(request_type, field: str, count: int) -> bytes:
    """`count` empty entries of a repeated message or string field, plus reasoning text, as raw protobuf."""
    fields = request_type.DESCRIPTOR.fields_by_name
    return _tag(fields["reasoning"].number, 2) + b"\x01a" + (_tag(fields[field].number, 2) + b"\x00") * count


@pytest.fixture
async def server(cache_dir, monkeypatch):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    server = await start_server(make_settings(cache_dir, kb={"enabled": False}), ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


@pytest.mark.parametrize("method, request_type", [("ScoreKnowledge", kpb.ScoreKnowledgeRequest),
                                                  ("ScoreChain", kpb.ScoreChainRequest)])
async def test_millions_of_passages_are_refused_at_once_and_health_is_answered_meanwhile(server, method, request_type):
    raw = _many_empty(request_type, "context", PASSAGES)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call = channel.unary_unary(KNOWLEDGE + method)
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        started = time.perf_counter()
        task = asyncio.ensure_future(call(raw, timeout=60))
        await asyncio.sleep(0.3)  # the request is on the server
        checked = time.perf_counter()
        await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        health_s = time.perf_counter() - checked
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await task
        elapsed = time.perf_counter() - started
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"context: has {PASSAGES} passages; the limit is 64 (KGV_LIMITS__MAX_CONTEXT_PASSAGES)" in \
        info.value.details()
    assert health_s < 1.5 and elapsed < 3.0, (health_s, elapsed)


async def test_a_metrics_list_of_millions_is_refused_naming_the_field(server):
    fields = kpb.ScoreChainRequest.DESCRIPTOR.fields_by_name
    count = 3_000_000
    length, varint = count, b""
    while True:  # packed enum: one length-delimited run of one-byte values
        low, length = length & 0x7F, length >> 7
        varint += bytes([low | (0x80 if length else 0)])
        if not length:
            break
    raw = _tag(fields["reasoning"].number, 2) + b"\x01a" + _tag(fields["metrics"].number, 2) + varint + b"\x01" * count
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(KNOWLEDGE + "ScoreChain")(raw, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"metrics: has {count} entries" in info.value.details()
    assert time.perf_counter() - started < 3.0


async def test_a_stream_item_with_millions_of_passages_gets_its_own_error_and_the_stream_goes_on(server):
    chain = _many_empty(kpb.ScoreChainRequest, "context", PASSAGES)
    fields = kpb.StreamScoreChainsRequest.DESCRIPTOR.fields_by_name

    def item(item_id: str, chain_bytes: bytes) -> bytes:
        def length(n: int) -> bytes:
            out = b""
            while True:
                low, n = n & 0x7F, n >> 7
                out += bytes([low | (0x80 if n else 0)])
                if not n:
                    return out
        return (_tag(fields["id"].number, 2) + length(len(item_id)) + item_id.encode()
                + _tag(fields["chain"].number, 2) + length(len(chain_bytes)) + chain_bytes)

    good = kpb.ScoreChainRequest(steps=["Protamine sulfate neutralizes heparin."], metrics=[kpb.METRIC_KNOWLEDGE_INDEX])
    good.context.add(id="f1", text="Protamine sulfate neutralizes heparin.")
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stream = channel.stream_stream(KNOWLEDGE + "StreamScoreChains",
                                       response_deserializer=kpb.StreamScoreChainsResponse.FromString)
        started = time.perf_counter()
        results = [r async for r in stream(iter([item("huge", chain), item("ok", good.SerializeToString())]),
                                           timeout=60)]
    by_id = {r.id: r for r in results}
    assert set(by_id) == {"huge", "ok"}
    assert by_id["huge"].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "KGV_LIMITS__MAX_CONTEXT_PASSAGES" in by_id["huge"].status.message
    assert by_id["ok"].status.code == 0 and by_id["ok"].result.HasField("knowledge")
    assert time.perf_counter() - started < 5.0


async def test_a_reasoning_of_millions_of_zero_width_spaces_is_refused_by_its_length_without_scanning_it(server):
    """has_visible_content scanned all 4 million characters (over a second on the event loop) before the length
    was looked at."""
    request = kpb.ScoreKnowledgeRequest(reasoning="\u200b" * 4_000_000)  # 12 MB of zero-width spaces
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call = channel.unary_unary(KNOWLEDGE + "ScoreKnowledge", request_serializer=kpb.ScoreKnowledgeRequest.SerializeToString)
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reasoning: is 4000000 characters long; the limit is 100000 (KGV_LIMITS__MAX_REASONING_CHARS)" in \
        info.value.details()
    assert time.perf_counter() - started < 1.0


async def test_the_early_checks_are_no_stricter_than_validation_for_the_parts_a_chain_does_not_ask_for(server):
    """An InfoGain-only chain neither converts nor validates context passages; a KI-only one ignores choices and
    answers: too many or too long of those must not fail it now."""
    from client import requests as rq

    row = {"question": "Which drug reverses heparin?", "answer": "Protamine sulfate",
           "steps": ["Protamine sulfate neutralizes heparin."],
           "context": [{"id": f"p{i}", "text": "Protamine sulfate neutralizes heparin."} for i in range(70)]}
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call = channel.unary_unary(KNOWLEDGE + "ScoreChain", request_serializer=kpb.ScoreChainRequest.SerializeToString,
                                   response_deserializer=kpb.ScoreChainResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:  # asks for KI: 70 passages are too many
            await call(rq.chain_request(row, ("ki",)), timeout=60)
        assert "KGV_LIMITS__MAX_CONTEXT_PASSAGES" in info.value.details()
        response = await call(rq.chain_request(row, ("infogain",)), timeout=120)
        assert response.HasField("info_gain") and not response.HasField("knowledge")
        ki_only = {**row, "context": row["context"][:3], "answer": "x" * 5_000, "choices": ["a"] * 30}
        response = await call(rq.chain_request(ki_only, ("ki",)), timeout=60)
        assert response.HasField("knowledge")
