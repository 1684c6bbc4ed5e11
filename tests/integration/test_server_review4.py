"""Server runtime against a real server: responses over the message limit (a search, a stream item carrying a long
id) are refused with advice instead of failing at send time; a SIGTERM during a KB reload exits without waiting for
it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import grpc
import pytest

from client import AsyncVerifierClient, VerifierError
from client.requests import chain_request
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc
from server.app import start_server
from tests.conftest import REPO, make_settings, takes_ctrl_c

HANG_GUARD_S = 60  # only catches a hang; nothing here depends on timing


@pytest.fixture
def fake_models(monkeypatch):
    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())


async def test_a_search_too_large_for_the_message_limit_says_so_and_what_to_send(cache_dir, demo_kb_path,
                                                                                 fake_models):
    """SearchKnowledgeBase was not checked against the message limit: 50 facts over it failed at send time as an
    opaque RESOURCE_EXHAUSTED 'Sent message larger than max' (logged OK by the server)."""
    limit = 4096
    server = await start_server(make_settings(cache_dir, server={"max_message_bytes": limit}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            with pytest.raises(VerifierError) as info:
                await client.search("heparin anticoagulant", top_k=50, timeout_s=HANG_GUARD_S)
            assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "RESPONSE_TOO_LARGE", info.value
            assert "smaller top_k" in info.value.message and "4.1 kB message limit" in info.value.message
            assert len(await client.search("heparin anticoagulant", top_k=2, timeout_s=HANG_GUARD_S)) == 2
    finally:
        await server.stop(0)


CHAIN = chain_request({"question": "What reverses heparin?",
                       "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."],
                       "answer": "protamine sulfate"})


async def _score_chain_size(cache_dir) -> int:
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            response = await kgrpc.KnowledgeServiceStub(channel).ScoreChain(CHAIN, timeout=HANG_GUARD_S)
        return response.ByteSize()
    finally:
        await server.stop(0)


async def test_a_stream_item_with_a_long_id_of_wide_characters_fits_or_gets_its_own_error(cache_dir, demo_kb_path,
                                                                                          fake_models):
    """A result that fit the limit with 1024 bytes to spare came back in a stream item beside an id of 256
    four-byte characters (1024 bytes, plus the item's own field headers): the item was over the limit at send time
    and gRPC ended the whole stream with an opaque RESOURCE_EXHAUSTED, the other items' results lost."""
    size = await _score_chain_size(cache_dir)
    limit = size + 1024  # the result alone fits with 1024 bytes to spare
    server = await start_server(make_settings(cache_dir, server={"max_message_bytes": limit}), ["127.0.0.1:0"])
    wide = "\U0001F600" * 256  # 256 characters (the id limit) of 4 bytes each
    try:
        await server.wait_ready(300)
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = kgrpc.KnowledgeServiceStub(channel)
            assert (await stub.ScoreChain(CHAIN, timeout=HANG_GUARD_S)).ByteSize() == size

            async def items():
                yield kpb.StreamScoreChainsRequest(id=wide, chain=CHAIN)
                yield kpb.StreamScoreChainsRequest(id="short", chain=CHAIN)

            responses = [r async for r in stub.StreamScoreChains(items(), timeout=HANG_GUARD_S)]
        by_id = {r.id: r for r in responses}
        assert set(by_id) == {wide, "short"}
        assert by_id["short"].status.code == grpc.StatusCode.OK.value[0] and by_id["short"].result.ByteSize() == size
        status = by_id[wide].status
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], status
        assert "message limit" in status.message
    finally:
        await server.stop(0)


# `kgverify serve` whose KB reloads (every load after the first) wait for a file that the test creates only at its end
_HELD_RELOAD = """
import os, sys, time
from server import kb_holder
load, loads = kb_holder.KbHolder.load, []
def held(self, embedder):
    loads.append(1)
    if len(loads) > 1:
        print("reload held", flush=True)
        for _ in range(3000):  # 300 s at most: only a guard against a test that died
            if os.path.exists(os.environ["RELEASE_RELOAD"]):
                break
            time.sleep(0.1)
    return load(self, embedder)
kb_holder.KbHolder.load = held
from client.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_sigterm_during_a_kb_reload_exits_without_waiting_for_the_reload(tmp_path, cache_dir, demo_kb_path):
    """A reload runs on a thread of its own, which the shutdown did not count among the work it leaves behind: a
    SIGTERM while a reload loaded a large KB (minutes of hashing) kept the process alive until the load ended."""
    sock, release = tmp_path / "kgv.sock", tmp_path / "release"
    env = {**os.environ, "KGV_KB__CACHE_DIR": str(cache_dir), "KGV_KB__PATH": str(demo_kb_path),
           "KGV_SERVER__GRACE_PERIOD_S": "0.5", "RELEASE_RELOAD": str(release),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    proc = subprocess.Popen([sys.executable, "-c", _HELD_RELOAD, "serve", "--listen", f"unix://{sock}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=takes_ctrl_c)
    try:
        async with AsyncVerifierClient(f"unix://{sock}", retries=0) as client:
            await client.wait_ready(timeout_s=300)
            with pytest.raises(VerifierError) as info:
                await client.reload_kb(timeout_s=1.0)  # the caller gives up; the reload goes on, held
            assert info.value.code == "DEADLINE_EXCEEDED", info.value
        proc.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.to_thread(proc.wait, HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            pytest.fail("the server waited for the held reload instead of exiting")
        log = proc.stdout.read().decode()
        assert status == 0, log[-3000:]
        assert "reload held" in log and "1 KB or model load(s) still running" in log, log[-3000:]
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_stream_of_info_gain_only_chains_is_scored_while_the_judge_waits_for_its_backend(
        cache_dir, demo_kb_path, monkeypatch):
    """While only the judge's backend is down, a ScoreChain asking for InfoGain alone is served, but the same chains
    over StreamScoreChains (what `kgverify batch --metrics infogain` sends) were refused whole as NOT_READY."""
    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge(down=True))
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    info_gain_only = chain_request({"question": "What reverses heparin?", "answer": "protamine sulfate",
                                    "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes it."]},
                                   metrics=("infogain",))
    both = chain_request({"question": "What reverses heparin?", "answer": "protamine sulfate",
                          "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes it."]})
    try:
        await server.wait_ready(300)
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            stub = kgrpc.KnowledgeServiceStub(channel)
            unary = await stub.ScoreChain(info_gain_only, timeout=HANG_GUARD_S)
            assert unary.HasField("info_gain") and not unary.HasField("knowledge")

            async def items():
                yield kpb.StreamScoreChainsRequest(id="ig", chain=info_gain_only)
                yield kpb.StreamScoreChainsRequest(id="ki", chain=both)

            responses = {r.id: r async for r in stub.StreamScoreChains(items(), timeout=HANG_GUARD_S)}
        assert responses["ig"].status.code == grpc.StatusCode.OK.value[0], responses["ig"].status
        assert responses["ig"].result == unary
        assert responses["ki"].status.code == grpc.StatusCode.UNAVAILABLE.value[0], responses["ki"].status
        assert "waiting for its backend" in responses["ki"].status.message
    finally:
        await server.stop(0)
