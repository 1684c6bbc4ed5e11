"""The interceptor stack on a bare grpc.aio server (no models): a stream whose client stopped reading and then
cancelled, and undecodable requests to services that are not kgverify's (health)."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from client import VerifierError
from server.admission import Admission
from server.interceptors import ClientGoneInterceptor, ServiceInterceptor
from server.metrics import MetricsInterceptor

METHOD = "/kgverify.v1.ProbeService/Flood"
CHUNK = b"x" * 1_000_000


def _count(code: str) -> float:
    return REGISTRY.get_sample_value("kgverify_rpc_duration_seconds_count", {"method": METHOD, "code": code}) or 0.0


async def _server(flood):
    server = grpc.aio.server(interceptors=[
        ClientGoneInterceptor(), MetricsInterceptor(),
        ServiceInterceptor(Admission(100), lambda service: True, lambda service: None)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "kgverify.v1.ProbeService", {"Flood": grpc.stream_stream_rpc_method_handler(flood)})])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("ending", ["cancel", "deadline"])
async def test_a_client_that_stops_reading_ends_the_stream_cancelled_or_past_its_deadline_without_a_traceback(
        ending, caplog):
    """The server blocks sending (the client reads nothing); the client cancels, or its deadline passes. gRPC used
    to log the failed write as an ERROR ExecuteBatchError traceback, the service interceptor logged "OK: stream ended
    after N items" and metrics counted no CANCELLED call; a deadline that passed was then counted CANCELLED."""
    code = "CANCELLED" if ending == "cancel" else "DEADLINE_EXCEEDED"
    yielded = 0
    ended = asyncio.Event()

    async def flood(request_iterator, context):
        nonlocal yielded
        try:
            while True:
                yielded += 1
                yield CHUNK
        finally:
            ended.set()

    before = _count(code)
    server, address = await _server(flood)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="kgverify.rpc"):
            async with grpc.aio.insecure_channel(address) as channel:
                call = channel.stream_stream(METHOD)(iter([b""]), timeout=60 if ending == "cancel" else 3)
                last = -1
                while yielded != last or yielded == 0:  # until the server waits on flow control
                    last = yielded
                    await asyncio.sleep(0.5)
                if ending == "cancel":
                    call.cancel()
                await asyncio.wait_for(ended.wait(), 10)
            for _ in range(50):  # the service interceptor's line comes as its generator is finalised, and the
                # metrics interceptor (outside it) records the call just after
                if any("stream ended" in r.getMessage() for r in caplog.records) and _count(code) > before:
                    break
                await asyncio.sleep(0.1)
    finally:
        await server.stop(0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    ends = [r.getMessage() for r in caplog.records if "stream ended" in r.getMessage()]
    assert len(ends) == 1 and f" {code}: stream ended" in ends[0], ends
    assert _count(code) == before + 1


@pytest.mark.parametrize("raw", [b"\x0a\x02\xff\xfe", b"\xff"])
async def test_undecodable_health_checks_are_invalid_argument_without_a_traceback(raw, caplog):
    async def flood(request_iterator, context):
        yield b""

    server, address = await _server(flood)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="kgverify.rpc"):
            async with grpc.aio.insecure_channel(address) as channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                            response_deserializer=lambda b: b)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await check(raw, timeout=10)
                watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda b: b,
                                             response_deserializer=lambda b: b)
                with pytest.raises(grpc.aio.AioRpcError) as watched:
                    async for _ in watch(raw, timeout=10):
                        pass
                ok = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(0)
    for exc in (info.value, watched.value):
        error = VerifierError.from_rpc_error(exc)
        assert error.code == "INVALID_ARGUMENT" and error.reason == "UNDECODABLE_MESSAGE", error
        assert error.message.startswith("invalid request: the bytes are not a valid grpc.health.v1.HealthCheckRequest")
        assert "DecodeError:" in error.message and "Unexpected" not in error.message
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    lines = [r.getMessage() for r in caplog.records if "UNDECODABLE_MESSAGE" in r.getMessage()]
    assert len(lines) == 2 and all(len(line) < 200 for line in lines), lines


async def test_only_an_empty_request_with_the_probe_header_is_counted_as_a_probe():
    """The probe header alone used to move any call, a real one included, into the `#probe` series."""
    from client.aio import PROBE_METADATA

    def count(method: str, code: str = "OK") -> float:
        return REGISTRY.get_sample_value("kgverify_rpc_duration_seconds_count", {"method": method, "code": code}) or 0

    async def flood(request_iterator, context):
        yield b""

    check = "/grpc.health.v1.Health/Check"
    before = count(check), count(check + "#probe"), count(check, "NOT_FOUND")
    server, address = await _server(flood)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), metadata=PROBE_METADATA, timeout=10)
            await stub.Check(health_pb2.HealthCheckRequest(service=""), metadata=PROBE_METADATA, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):  # a real request that carries the header
                await stub.Check(health_pb2.HealthCheckRequest(service="kgverify.v1.Nothing"), metadata=PROBE_METADATA,
                                 timeout=10)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    finally:
        await server.stop(0)
    assert (count(check), count(check + "#probe"), count(check, "NOT_FOUND")) == (
        before[0] + 1, before[1] + 2, before[2] + 1)


def test_a_stream_item_id_is_echoed_in_full_or_in_a_form_no_valid_id_can_take():
    from server.streaming import echoed_id

    assert echoed_id("a" * 257, 256, 4 * 1024 * 1024) == "a" * 257  # never cut into a valid 256-character id
    huge = "a" * (4 * 1024 * 1024 - 100)  # only near the message limit: the id and a status would not fit
    shown = echoed_id(huge, 256, 4 * 1024 * 1024)
    assert len(shown) > 256 and shown.startswith("a" * 256) and shown.endswith(f"({len(huge)} characters)")
    assert echoed_id("a" * 256, 256, 300) == "a" * 256  # valid ids always come back as they are


def test_a_request_summary_formats_a_few_entries_of_each_repeated_field_not_a_million():
    """With KGV_SERVER__LOG_REQUEST_TEXT=true the whole request was formatted to log its first 500 characters:
    1 million empty passages took ~2 s of the event loop (16 MB: ~15 s)."""
    import time

    from kgverify.v1 import knowledge_service_pb2 as kpb
    from server.interceptors import SUMMARY_ENTRIES, request_summary

    request = kpb.ScoreKnowledgeRequest.FromString(b"\x12\x01a" + b"\x22\x00" * 1_000_000)
    started = time.perf_counter()
    summary = request_summary(request)
    assert time.perf_counter() - started < 0.6
    assert summary.count("context {") == SUMMARY_ENTRIES and len(request.context) == 1_000_000  # not trimmed itself
    item = kpb.StreamScoreChainsRequest(id="i1")
    item.chain.steps.extend(["step"] * 10_000)
    assert request_summary(item).count('steps: "step"') == SUMMARY_ENTRIES


async def test_request_text_is_not_formatted_at_all_when_debug_logging_is_off(monkeypatch):
    """log.debug's arguments were built eagerly: an operator who turned on log_request_text at INFO paid for
    formatting every request and stream item and saw nothing."""
    import server.interceptors as interceptors

    calls = []
    monkeypatch.setattr(interceptors, "request_summary", lambda request: calls.append(request) or "")

    async def items():
        yield object()

    level = interceptors.log.level
    try:
        interceptors.log.setLevel(logging.INFO)
        assert len([item async for item in interceptors._logged(items(), "/m")]) == 1
        assert calls == []
        interceptors.log.setLevel(logging.DEBUG)
        assert len([item async for item in interceptors._logged(items(), "/m")]) == 1
        assert len(calls) == 1
    finally:
        interceptors.log.setLevel(level)
