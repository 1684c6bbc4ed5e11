"""Server runtime against a real server: a model's own errors and the batch metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import AsyncVerifierClient, VerifierError
from server.app import start_server
from server.health import KNOWLEDGE_BASE
from tests.conftest import make_settings

HANG_GUARD_S = 60  # only catches a hang; nothing here depends on timing
STEPS = ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]


def _scrape(address):
    families = text_string_to_metric_families(httpx.get(f"http://{address}/metrics", timeout=5).text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _judge_model(samples, name):
    return sum(value for (metric, labels), value in samples.items()
               if metric == name and dict(labels).get("model", "").startswith("kgverify-nli-judge"))


@pytest.fixture
async def nli_server(cache_dir, demo_kb_path, monkeypatch):
    """A real server with the real NLI judge, whose model call times out on its own for claims saying so."""
    from server.backends.judges.nli_model import NliModel

    scored = NliModel.predict_proba

    def predict_proba(self, pairs, *args, **kwargs):
        if any("device-timeout" in claim for _, claim in pairs):
            raise TimeoutError("the accelerator did not answer within 5 s")
        return scored(self, pairs, *args, **kwargs)

    monkeypatch.setattr(NliModel, "predict_proba", predict_proba)
    server = await start_server(make_settings(cache_dir, metrics={"port": 0}), ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


async def test_a_model_timing_out_on_its_own_is_not_the_callers_deadline_and_is_not_counted_as_served(nli_server):
    """The model's own TimeoutError came back as DEADLINE_EXCEEDED / BACKEND_TIMEOUT "the deadline expired while
    waiting for the model" (a client would retry with a longer deadline, in vain), and its failed batch was counted
    in kgverify_batches_total / kgverify_batch_items_total like a served one."""
    async with AsyncVerifierClient(nli_server.addresses[0], retries=0) as client:
        before = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        with pytest.raises(VerifierError) as info:
            await client.score_knowledge(timeout_s=60.0, steps=["Protamine sulfate neutralizes heparin "
                                                                "(device-timeout)."])
        assert info.value.code == "INTERNAL" and info.value.reason != "BACKEND_TIMEOUT", info.value
        after = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        for name in ("kgverify_batches_total", "kgverify_batch_items_total"):
            assert _judge_model(after, name) == _judge_model(before, name), name

        score = await client.score_knowledge(timeout_s=60.0, steps=STEPS)  # the model serves on
        assert score.steps[1].verdict == "supported"
        served = await asyncio.to_thread(_scrape, nli_server.metrics_address)
        assert _judge_model(served, "kgverify_batches_total") > _judge_model(after, "kgverify_batches_total")


async def test_a_reload_whose_caller_leaves_mid_load_still_turns_the_kb_serving(cache_dir, embedder, tmp_path,
                                                                                   monkeypatch):
    """The caller of ReloadKnowledgeBase gave up (its deadline) while a repaired KB loaded: the load went on in its
    thread and served the KB, but health was published when the caller left, not when the load ended, so the
    service (and the whole server) stayed NOT_SERVING for orchestrators; and the next reload did not wait for it
    (it reported the KB before that load as the previous one)."""
    import threading

    from kb.build import build_kb
    from kb.ingest import Document
    from kb.knowledge_base import FaissKnowledgeBase

    path = tmp_path / "kb"
    build_kb([Document("w", "Warfarin is monitored with the INR.", "https://ex/w")], path, embedder, progress=False)
    real = FaissKnowledgeBase.load.__func__
    gate, loads = threading.Event(), []

    def load(cls, *args, **kwargs):
        if not gate.is_set():
            loads.append("held")
            gate.wait(HANG_GUARD_S)
        return real(cls, *args, **kwargs)

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(FaissKnowledgeBase, "load", unreadable)
    server = await start_server(make_settings(cache_dir, kb={"path": path}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            assert await client.health(KNOWLEDGE_BASE) == "NOT_SERVING"
            monkeypatch.setattr(FaissKnowledgeBase, "load", classmethod(load))  # repaired, and slow to load
            with pytest.raises(VerifierError) as info:
                await client.reload_kb(timeout_s=0.5)
            assert info.value.code == "DEADLINE_EXCEEDED" and loads == ["held"]
            assert await client.health(KNOWLEDGE_BASE) == "NOT_SERVING"  # still loading
            gate.set()
            async with asyncio.timeout(HANG_GUARD_S):
                while await client.health(KNOWLEDGE_BASE) != "SERVING":
                    await asyncio.sleep(0.05)
                await client.wait_ready("", timeout_s=HANG_GUARD_S)
                assert (await client.search("warfarin INR", top_k=1))[0].fact_id == "w"
            first = (await client.kb_info())["kb_id"]

            # a new KB, whose caller leaves while it loads: the next reload waits for that load
            gate.clear()
            build_kb([Document("h", "Heparin is monitored with the aPTT.", "https://ex/h")], path, embedder,
                     progress=False)
            with pytest.raises(VerifierError):
                await client.reload_kb(timeout_s=0.5)
            assert loads == ["held", "held"]
            following = asyncio.ensure_future(client.reload_kb(timeout_s=HANG_GUARD_S))
            await asyncio.sleep(0.2)  # (only lets the call reach the server; the result does not depend on it)
            gate.set()
            async with asyncio.timeout(HANG_GUARD_S):
                previous, current = await following
            assert previous == current != first
            assert (await client.search("heparin aPTT", top_k=1))[0].fact_id == "h"
    finally:
        gate.set()
        await server.stop(0)


async def test_a_backend_built_for_a_caller_that_left_is_kept_not_built_again_beside_the_first(
        cache_dir, demo_kb_path, monkeypatch):
    """A backend built on first use (a judge the request names) for a caller whose deadline passed mid-build was
    thrown away: the next caller built it again in a second request worker, which waited on the first build's model
    load, so both workers (the default) were taken and every search and model batch of the server stalled."""
    import threading

    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    gate, builds = threading.Event(), []

    def slow_judge(ctx):
        builds.append(threading.current_thread().name)
        ctx.shared("review3-slow-model", lambda: gate.wait(HANG_GUARD_S))  # a model load, under the shared lock
        return FakeJudge()

    monkeypatch.setitem(registry.JUDGES, "baseline", slow_judge)
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir, server={"executor_workers": 2}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            for _ in range(2):  # two callers that give up while the judge they name loads
                with pytest.raises(VerifierError) as info:
                    await client.score_knowledge(timeout_s=0.5, steps=STEPS, judge="baseline")
                assert info.value.code == "DEADLINE_EXCEEDED"
            assert len(builds) == 1  # the second caller waited for the first build
            async with asyncio.timeout(HANG_GUARD_S):  # a request worker is still free
                assert (await client.search("protamine heparin", top_k=1, timeout_s=HANG_GUARD_S))
            gate.set()
            async with asyncio.timeout(HANG_GUARD_S):
                score = await client.score_knowledge(timeout_s=HANG_GUARD_S, steps=STEPS, judge="baseline")
            assert score.steps[1].verdict == "supported" and len(builds) == 1
    finally:
        gate.set()
        await server.stop(0)


async def test_searches_and_health_are_served_while_a_model_loads(cache_dir, demo_kb_path, monkeypatch):
    """Every request that embeds fetched the embedder's micro-batcher on the event loop, under the registry's thread
    lock, which a model load holds (the judge's at startup, once the KB already serves; a backend built on first
    use): the whole server, health checks included, froze until the load ended."""
    import threading

    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    gate, builds, loaded = threading.Event(), [], []

    def load_model():
        gate.wait(HANG_GUARD_S)
        loaded.append(1)

    def slow_judge(ctx):
        builds.append(1)
        ctx.shared("review3-loading-model", load_model)
        return FakeJudge()

    monkeypatch.setitem(registry.JUDGES, "baseline", slow_judge)
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            first_use = asyncio.ensure_future(
                client.score_knowledge(timeout_s=HANG_GUARD_S * 2, steps=STEPS, judge="baseline"))
            async with asyncio.timeout(HANG_GUARD_S):
                while not builds:  # the judge's model is loading
                    await asyncio.sleep(0.01)
            hits = await client.search("protamine heparin", top_k=1, timeout_s=HANG_GUARD_S * 2)
            assert await client.health("") == "SERVING"
            assert hits and not loaded  # answered while the model loads
            gate.set()
            score = await first_use
            assert score.steps[1].verdict == "supported" and loaded
    finally:
        gate.set()
        await server.stop(0)


async def test_a_split_too_large_for_the_message_limit_says_so_and_what_to_send(cache_dir, demo_kb_path, monkeypatch):
    """SplitReasoning was the one RPC whose response was not checked against the message limit: its steps and claims
    repeat the text (about 3x the request), so a reasoning well under the limit failed at send time as an opaque
    RESOURCE_EXHAUSTED 'Sent message larger than max' (logged OK by the server, with gRPC's ERROR traceback)."""
    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    limit = 64 * 1024
    server = await start_server(make_settings(cache_dir, server={"max_message_bytes": limit}), ["127.0.0.1:0"])
    try:
        await server.wait_ready(300)
        reasoning = " ".join(f"Drug {i} inhibits the enzyme number {i} in the liver and therefore lowers the blood "
                             f"pressure of patients {i}, and also raises the heart rate {i}." for i in range(250))
        assert len(reasoning.encode()) < limit / 1.5
        async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
            with pytest.raises(VerifierError) as info:
                await client.split(reasoning)
            assert info.value.code == "RESOURCE_EXHAUSTED" and info.value.reason == "RESPONSE_TOO_LARGE", info.value
            assert "send a shorter reasoning" in info.value.message and "65.5 kB message limit" in info.value.message
            assert len((await client.split(reasoning[:5000])).steps) > 10  # a shorter one is split
    finally:
        await server.stop(0)
