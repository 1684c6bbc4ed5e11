"""Fault behaviour of a real server: backends down or slow, and overload, within the caller's deadline."""

import asyncio
import statistics
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import AsyncVerifierClient, VerifierError
from client import requests as rq
from server.app import start_server
from server.backends import registry
from server.backends.judges.cache import VerdictCache
from server.health import INFO_GAIN, KNOWLEDGE, KNOWLEDGE_BASE
from tests.conftest import make_settings
from tests.fakes.backends import FakeJudge
from tests.fakes.vllm_server import FakeVllmServer, label_choice_reply

CHAIN = {"question": "Which drug reverses heparin?", "answer": "Protamine sulfate",
         "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]}


@pytest.fixture
def fake_vllm():
    """The fake vLLM server as the InfoGain LM: a character tokenizer and a flat -0.5 nats per token."""
    with FakeVllmServer(model="tiny", scorer=lambda ids: [-0.5] * (len(ids) - 1),
                        tokenizer=lambda text, special: [1 + ord(c) % 200 for c in text]) as fake:
        yield fake


@pytest.fixture
def judge_vllm():
    """A second fake vLLM server for the LLM judge: it supports every claim (label A)."""
    with FakeVllmServer(model="judge", chat=lambda body: label_choice_reply({"A": 0.9, "B": 0.05, "C": 0.05})) as fake:
        yield fake


@pytest.fixture
async def start(cache_dir, demo_kb_path, monkeypatch, fake_vllm):
    """Starts a real server (demo KB, vLLM InfoGain on the fake) with the given fake judge (None: as configured)."""
    servers = []

    async def _start(fake_judge, **sections):
        if fake_judge is not None:
            monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: fake_judge)
        lm = {"backend": "vllm", "model": "tiny", "base_url": fake_vllm.base_url, **sections.pop("lm", {})}
        server_cfg = {"health_interval_s": 0.2, **sections.pop("server", {})}
        server = await start_server(make_settings(cache_dir, lm=lm, server=server_cfg, **sections), ["127.0.0.1:0"])
        servers.append(server)
        await server.wait_ready(300)
        return server

    yield _start
    for server in servers:
        await server.stop(0)


def _fresh(chain, n):
    """The chain with its knowledge step reworded, so no cache has seen its claim."""
    return {**chain, "steps": [chain["steps"][0], f"Protamine sulfate neutralizes heparin (case {n})."]}


async def _until(client, service, status, timeout_s=15.0):
    """Polls health until `service` reports `status` (the monitor re-checks every 0.2 s here)."""
    deadline = time.monotonic() + timeout_s
    while await client.health(service) != status:
        assert time.monotonic() < deadline, f"{service} never became {status}"
        await asyncio.sleep(0.05)


def _rpc_count(method, code):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("kgverify_rpc_duration_seconds_count", {"method": method, "code": code}) or 0.0


async def _timed_error(call):
    started = time.perf_counter()
    with pytest.raises(VerifierError) as info:
        await call
    return info.value, time.perf_counter() - started


async def test_judge_down_is_unavailable_in_time_flips_only_knowledge_and_recovers(start):
    judge = FakeJudge()
    server = await start(judge)
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        judge.down = True
        error, elapsed = await _timed_error(client.score_chain(timeout_s=5.0, **CHAIN))
        assert error.code == "UNAVAILABLE" and error.reason == "BACKEND_UNAVAILABLE" and elapsed < 5.0
        await _until(client, KNOWLEDGE, "NOT_SERVING")
        assert await client.health(INFO_GAIN) == "SERVING" and await client.health(KNOWLEDGE_BASE) == "SERVING"
        assert await client.health() == "NOT_SERVING"
        assert (await client.score_info_gain(timeout_s=5.0, **CHAIN)).info_gain is not None  # InfoGain still serves
        # a loaded service waiting for its backend: wait_ready keeps waiting (a backend comes back), and its
        # probes are kept apart from real calls in the RPC metrics
        probes = _rpc_count("/kgverify.v1.KnowledgeService/SplitReasoning#probe", "INVALID_ARGUMENT")
        real = _rpc_count("/kgverify.v1.KnowledgeService/SplitReasoning", "INVALID_ARGUMENT")
        error, _ = await _timed_error(client.wait_ready(KNOWLEDGE, timeout_s=3.0))
        assert error.code == "DEADLINE_EXCEEDED" and error.reason == "NOT_READY"
        assert _rpc_count("/kgverify.v1.KnowledgeService/SplitReasoning#probe", "INVALID_ARGUMENT") > probes
        assert _rpc_count("/kgverify.v1.KnowledgeService/SplitReasoning", "INVALID_ARGUMENT") == real

        judge.down = False
        await _until(client, KNOWLEDGE, "SERVING")
        assert await client.health() == "SERVING"
        assert (await client.score_chain(timeout_s=5.0, **CHAIN)).knowledge_index == 1.0


async def test_vllm_judge_down_is_unavailable_in_time_flips_only_knowledge_and_recovers(start, judge_vllm):
    server = await start(None, judge={"backend": "vllm", "base_url": judge_vllm.base_url, "model": "judge"})
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        score = await client.score_chain(**CHAIN)
        assert score.knowledge_index == 1.0 and score.steps[1].tier == "llm"
        judge_vllm.faults.dead_engine, judge_vllm.faults.http_status = True, 503  # engine dead: /health 503
        # New claims each time: the verdict cache would answer a claim it has judged before.
        error, elapsed = await _timed_error(client.score_chain(timeout_s=5.0, **_fresh(CHAIN, 1)))
        assert error.code == "UNAVAILABLE" and error.reason == "BACKEND_UNAVAILABLE" and elapsed < 5.0
        await _until(client, KNOWLEDGE, "NOT_SERVING")
        assert await client.health(INFO_GAIN) == "SERVING" and await client.health(KNOWLEDGE_BASE) == "SERVING"
        assert (await client.score_info_gain(timeout_s=5.0, **CHAIN)).info_gain is not None

        judge_vllm.faults.dead_engine, judge_vllm.faults.http_status = False, None
        await _until(client, KNOWLEDGE, "SERVING")
        assert (await client.score_chain(timeout_s=5.0, **_fresh(CHAIN, 2))).knowledge_index == 1.0

        judge_vllm.faults.delay_s = 3.0  # a hung judge: the caller's deadline wins
        error, elapsed = await _timed_error(client.score_chain(timeout_s=1.0, **_fresh(CHAIN, 3)))
        assert error.code == "DEADLINE_EXCEEDED" and elapsed < 2.5


async def test_a_vllm_serving_another_model_keeps_the_service_not_serving_and_says_why(start, judge_vllm, caplog):
    server = await start(None, judge={"backend": "vllm", "base_url": judge_vllm.base_url, "model": "wrong-judge"},
                         lm={"model": "wrong-lm"}, kb={"enabled": False})
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        assert await client.health(KNOWLEDGE) == await client.health(INFO_GAIN) == "NOT_SERVING"
        logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("serves ['judge'], not 'wrong-judge'" in m and "--served-model-name" in m for m in logged)
        assert any("serves ['tiny'], not 'wrong-lm'" in m for m in logged)
        error, _ = await _timed_error(client.score_knowledge(steps=CHAIN["steps"][1:], context=["Protamine ..."]))
        assert error.code == "UNAVAILABLE" and error.reason == "NOT_READY"  # retryable: vLLM may be fixed
        assert "waiting for its backend" in error.message and "not serving the configured model" in error.message

        judge_vllm.model = "wrong-judge"  # vLLM restarted with --served-model-name wrong-judge
        await _until(client, KNOWLEDGE, "SERVING")
        score = await client.score_knowledge(steps=CHAIN["steps"][1:], context=["Protamine neutralizes heparin."])
        assert score.steps[0].verdict == "supported" and score.llm_calls == 1


async def test_a_cascade_whose_vllm_serves_another_model_degrades_to_its_embedded_verdicts(start, judge_vllm):
    server = await start(None, judge={"backend": "cascade", "base_url": judge_vllm.base_url, "model": "wrong-judge",
                                      "cascade_threshold": 1.0})  # every claim with evidence escalates
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        assert await client.health(KNOWLEDGE) == "SERVING"  # the cascade serves on its embedded tier
        score = await client.score_knowledge(steps=CHAIN["steps"][1:], context=["Protamine neutralizes heparin."])
        assert score.status == "ok" and score.steps[0].tier == "degraded" and score.steps[0].probabilities
        assert "does not exist" in score.steps[0].claims[0].error  # why the LLM tier did not decide

        judge_vllm.model = "wrong-judge"  # vLLM restarted with --served-model-name wrong-judge
        score = await client.score_knowledge(steps=_fresh(CHAIN, 4)["steps"][1:],
                                             context=["Protamine neutralizes heparin."])
        assert score.steps[0].tier == "llm" and score.llm_calls == 1


async def test_vllm_lm_down_flips_only_info_gain_and_recovers(start, fake_vllm):
    server = await start(FakeJudge())
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        assert (await client.score_info_gain(**CHAIN)).estimator == "lm"
        fake_vllm.faults.dead_engine, fake_vllm.faults.http_status = True, 503
        error, elapsed = await _timed_error(client.score_info_gain(timeout_s=5.0, **CHAIN))
        assert error.code == "UNAVAILABLE" and elapsed < 5.0
        await _until(client, INFO_GAIN, "NOT_SERVING")
        assert await client.health(KNOWLEDGE) == "SERVING"
        assert (await client.score_knowledge(steps=CHAIN["steps"])).knowledge_index == 1.0

        fake_vllm.faults.dead_engine, fake_vllm.faults.http_status = False, None
        await _until(client, INFO_GAIN, "SERVING")
        assert (await client.score_chain(**CHAIN)).info_gain is not None


async def test_slow_backend_answers_deadline_exceeded_and_frees_its_slot(start, fake_vllm):
    server = await start(FakeJudge(), lm={"timeout_s": 60.0})
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        fake_vllm.faults.delay_s = 3.0
        error, elapsed = await _timed_error(client.score_info_gain(timeout_s=1.0, **CHAIN))
        assert error.code == "DEADLINE_EXCEEDED" and elapsed < 2.5
    # The server stops working for a caller that is gone: nothing keeps holding a slot.
    deadline = time.monotonic() + 5.0
    while server.runtime.admission.inflight:
        assert time.monotonic() < deadline, "the timed-out call still holds its slot"
        await asyncio.sleep(0.02)


async def test_a_model_out_of_memory_is_resource_exhausted_and_the_server_keeps_serving(start, monkeypatch):
    """The real NLI judge whose batch makes torch's allocator fail (a real 4 PiB request) answers
    RESOURCE_EXHAUSTED / DEVICE_OUT_OF_MEMORY, not INTERNAL; the next request is served."""
    import torch

    from server.backends.judges.nli_model import NliModel

    scored = NliModel.predict_proba

    def predict_proba(self, pairs, *args, **kwargs):
        if any("allocate-too-much" in claim for _, claim in pairs):
            torch.empty(2**50, dtype=torch.float32)
        return scored(self, pairs, *args, **kwargs)

    monkeypatch.setattr(NliModel, "predict_proba", predict_proba)
    server = await start(None, metrics={"port": 0})
    before = await asyncio.to_thread(_scrape, server.metrics_address)
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        oversized = {**CHAIN, "steps": ["Protamine sulfate neutralizes heparin (allocate-too-much)."]}
        error, _ = await _timed_error(client.score_knowledge(timeout_s=30.0, steps=oversized["steps"]))
        assert error.code == "RESOURCE_EXHAUSTED" and error.reason == "DEVICE_OUT_OF_MEMORY", error
        assert "ran out of device memory" in error.message
        after = await asyncio.to_thread(_scrape, server.metrics_address)
        out_of_memory = {labels: value - before.get((name, labels), 0.0) for (name, labels), value in after.items()
                         if name == "kgverify_model_out_of_memory_total" and value != before.get((name, labels))}
        assert list(out_of_memory.values()) == [1.0], out_of_memory
        assert dict(next(iter(out_of_memory)))["model"].startswith("kgverify-nli-judge")
        assert await client.health(KNOWLEDGE) == "SERVING"
        score = await client.score_knowledge(timeout_s=30.0, steps=CHAIN["steps"])
        assert score.steps[1].verdict == "supported"


async def test_slow_judge_hits_the_callers_deadline(start):
    server = await start(FakeJudge(delay_s=5.0))
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        error, elapsed = await _timed_error(client.score_knowledge(timeout_s=0.5, steps=CHAIN["steps"]))
        assert error.code == "DEADLINE_EXCEEDED" and elapsed < 2.0


def _scrape(address):
    families = text_string_to_metric_families(httpx.get(f"http://{address}/metrics", timeout=5).text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _sample(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_verdict_cache_hits_and_misses_are_counted(start):
    """The pipeline asks the cache before the judge, so only the cache can count its hits."""
    judge = FakeJudge()
    judge.verdict_cache = VerdictCache(64)
    server = await start(judge, metrics={"port": 0})
    before = await asyncio.to_thread(_scrape, server.metrics_address)  # counters are process-wide
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        first = await client.score_knowledge(steps=CHAIN["steps"])
        again = await client.score_knowledge(steps=CHAIN["steps"])
    after = await asyncio.to_thread(_scrape, server.metrics_address)
    claims = sum(len(s.claims) for s in first.steps if s.verdict != "no_knowledge")
    assert claims and all(c.cached for s in again.steps for c in s.claims if s.verdict != "no_knowledge")
    for result in ("miss", "hit"):
        counted = [_sample(x, "kgverify_cache_lookups_total", cache="judge_verdicts", result=result)
                   for x in (before, after)]
        assert counted[1] - counted[0] == claims, result


async def test_overload_is_shed_within_50_ms_and_counted(start):
    judge = FakeJudge(gate=asyncio.Event())
    server = await start(judge, server={"max_inflight": 2}, metrics={"port": 0})
    method = "/kgverify.v1.KnowledgeService/ScoreKnowledge"
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        held = [asyncio.ensure_future(client.score_knowledge(steps=CHAIN["steps"])) for _ in range(2)]
        while judge.waiting < 2:
            await asyncio.sleep(0.01)
        before = await asyncio.to_thread(_scrape, server.metrics_address)
        latencies = []
        for _ in range(20):
            error, elapsed = await _timed_error(client.score_knowledge(steps=CHAIN["steps"]))
            assert error.code == "RESOURCE_EXHAUSTED" and error.reason == "OVERLOADED"
            latencies.append(elapsed)
        burst = await asyncio.gather(*(client.score_knowledge(steps=CHAIN["steps"]) for _ in range(50)),
                                     return_exceptions=True)
        assert all(isinstance(e, VerifierError) and e.code == "RESOURCE_EXHAUSTED" for e in burst)
        print(f"shed latency over loopback: median {statistics.median(latencies) * 1e3:.1f} ms, "
              f"max {max(latencies) * 1e3:.1f} ms")
        # generous: on a shared 2-core machine one of the 20 can wait half a second for a core (seen once in CI)
        assert statistics.median(latencies) < 0.05 and sorted(latencies)[-2] < 0.5, latencies
        after = await asyncio.to_thread(_scrape, server.metrics_address)
        assert _sample(after, "kgverify_inflight") == 2
        shed = _sample(after, "kgverify_rpc_duration_seconds_count", method=method, code="RESOURCE_EXHAUSTED")
        assert shed - _sample(before, "kgverify_rpc_duration_seconds_count", method=method,
                              code="RESOURCE_EXHAUSTED") == 70
        judge.gate.set()
        await asyncio.gather(*held)
        after = await asyncio.to_thread(_scrape, server.metrics_address)
        assert _sample(after, "kgverify_rpc_duration_seconds_count", method=method, code="OK") >= 2
        assert _sample(after, "kgverify_backend_calls_total", kind="judge", backend="fake", outcome="ok") >= 2
        assert _sample(after, "kgverify_inflight") == 0

        async def items():
            for i in range(3):
                yield f"c{i}", rq.chain_request(CHAIN, ("ki",))

        results = [r async for r in client.stream_chains(items())]
        codes = ["OK" if not isinstance(r, VerifierError) else r.code for _, r in results]
        assert len(codes) == 3 and set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}  # 3 items against 2 slots
        final = await asyncio.to_thread(_scrape, server.metrics_address)
        for code in set(codes):
            counted = _sample(final, "kgverify_stream_items_total", code=code)
            assert counted - _sample(after, "kgverify_stream_items_total", code=code) == codes.count(code)


async def test_a_judge_down_at_startup_does_not_stop_the_calls_that_never_reach_it(start, judge_vllm):
    """The knowledge service waits for its judge (NOT_READY), but splitting and InfoGain-only chains need no judge."""
    server = await start(None, judge={"backend": "vllm", "base_url": judge_vllm.base_url, "model": "wrong-judge"},
                         kb={"enabled": False})
    async with AsyncVerifierClient(server.addresses[0], retries=0) as client:
        assert await client.health(KNOWLEDGE) == "NOT_SERVING" and await client.health(INFO_GAIN) == "SERVING"
        error, _ = await _timed_error(client.score_knowledge(steps=CHAIN["steps"], context=["Protamine ..."]))
        assert error.code == "UNAVAILABLE" and error.reason == "NOT_READY"
        error, _ = await _timed_error(client.score_chain(**CHAIN, context=["Protamine ..."]))  # KI asked: the judge
        assert error.code == "UNAVAILABLE" and error.reason == "NOT_READY"
        assert len((await client.split("Heparin is an anticoagulant. Protamine reverses it.")).steps) >= 1
        score = await client.score_chain(**CHAIN, metrics=["infogain"])
        assert score.knowledge_index is None and score.info_gain is not None and len(score.steps) == 2
