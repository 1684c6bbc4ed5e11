"""A stream whose server goes away mid-call leaves nothing waiting on the caller's items: gRPC's task reading them
was left pending for good (its cancel only runs while the call is live), destroyed pending when the loop closed,
and the batch runner printed "Task was destroyed but it is pending!" and "aclose(): asynchronous generator is
already running" when a server was killed."""

from __future__ import annotations

import asyncio

import pytest

from client import AsyncVerifierClient, VerifierError
from client import requests as rq
from server.app import start_server
from tests.conftest import make_settings

CHAIN = {"question": "What reverses heparin?", "steps": ["Protamine sulfate neutralizes heparin."]}


async def test_a_stream_whose_server_goes_away_closes_the_callers_items(cache_dir, demo_kb_path):
    server = await start_server(make_settings(cache_dir, judge={"backend": "baseline"}), ["127.0.0.1:0"])
    stopped = False
    try:
        await server.wait_ready(300)
        first_sent, never, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def items():
            try:
                yield "one", rq.chain_request(CHAIN, metrics=("ki",))
                first_sent.set()
                await never.wait()  # the caller has no more items yet
            finally:
                closed.set()

        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            async def consume():
                return [item_id async for item_id, _ in client.stream_chains(items(), timeout_s=120)]

            reading = asyncio.create_task(consume())
            await asyncio.wait_for(first_sent.wait(), 60)
            await asyncio.sleep(0.5)  # (the first result may or may not come back before the server goes)
            await server.stop(0)
            stopped = True
            with pytest.raises(VerifierError):
                await asyncio.wait_for(reading, 60)
            await asyncio.wait_for(closed.wait(), 10)  # the items were closed, not left waiting
    finally:
        if not stopped:
            await server.stop(0)
