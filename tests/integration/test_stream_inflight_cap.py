"""One stream on an idle server is never shed by its own items: it runs at most what the server admits."""

from __future__ import annotations

from client.aio import AsyncVerifierClient
from client import requests as rq
from server.app import start_server
from server.backends import registry
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge

FACT = "Protamine sulfate neutralizes heparin."


async def test_a_stream_alone_waits_for_room_instead_of_shedding_its_own_items(cache_dir, demo_kb_path,
                                                                                monkeypatch):
    """KGV_SERVER__MAX_INFLIGHT below KGV_SERVER__MAX_STREAM_INFLIGHT (the sidecar admits 32, a stream took 64):
    with 2 admitted, 6 of a lone stream's 8 items came back RESOURCE_EXHAUSTED (OVERLOADED)."""
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge(delay_s=0.2))
    server = await start_server(make_settings(cache_dir, server={"max_inflight": 2, "max_stream_inflight": 64}),
                                ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)

        async def items():
            for i in range(8):
                yield f"item-{i}", rq.chain_request({"question": "q", "steps": [FACT], "context": [FACT]},
                                                    metrics=("ki",))

        async with AsyncVerifierClient(server.addresses[0], retries=0, timeout_s=120) as client:
            results = {item_id: result async for item_id, result in client.stream_chains(items())}
    finally:
        await server.stop(0)
    assert sorted(results) == [f"item-{i}" for i in range(8)]
    assert all(getattr(r, "status", None) == "ok" for r in results.values()), results
    assert server.runtime.admission.shed == 0
