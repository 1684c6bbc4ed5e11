"""A client whose server was down for a while reaches it again within about a second of its return.

gRPC's default reconnect backoff grows 1.6x per failed attempt up to 120 s: after an outage of a few seconds the
channel's next attempt could be seconds after the server was back, and every call until then failed UNAVAILABLE
(the medqa sidecar answered 503 'unverified' for 14 s after a 30 s outage). The client caps the backoff at 1 s.
The server here is a bare gRPC health server on a fixed port (restarted on the same port), so the test measures the
channel, not the kgverify server's start-up.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from client import AsyncVerifierClient, VerifierError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def health_server(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_a_client_reconnects_within_a_second_or_two_of_the_servers_return():
    port = free_port()
    server = await health_server(port)
    async with AsyncVerifierClient(f"127.0.0.1:{port}", retries=0) as client:
        assert await client.health() == "SERVING"
        await server.stop(0)
        failures = 0
        for _ in range(12):  # 6 s of outage with calls failing: the default backoff would reach ~4 s by now
            try:
                await client.health(timeout_s=0.5)
            except VerifierError as exc:
                assert exc.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
                failures += 1
            await asyncio.sleep(0.5)
        assert failures >= 10
        server = await health_server(port)
        try:
            await asyncio.sleep(2.5)  # reconnect attempts at most 1 s (+20% jitter) apart
            assert await client.health(timeout_s=1.0) == "SERVING"
        finally:
            await server.stop(0)
