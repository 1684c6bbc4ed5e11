"""While a service waits for its default backend (a vLLM judge or LM still loading), calls that name another
backend, one that is up, are served; calls that would use the waited-for backend get NOT_READY as before."""

from __future__ import annotations

import grpc
import pytest

from client.requests import chain_request
from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import info_gain_service_pb2_grpc as iggrpc
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc
from server.app import start_server
from tests.conftest import make_settings

HANG_GUARD_S = 60  # only catches a hang; nothing here depends on timing
ROW = {"question": "What reverses heparin?", "answer": "protamine sulfate",
       "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]}
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def server(cache_dir, demo_kb_path, monkeypatch):
    """Default judge vllm and default LM vllm, both down; the nli judge and the nli estimator up."""
    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "vllm", lambda ctx: FakeJudge(name="vllm:fake", down=True))
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge(name="nli:fake"))
    monkeypatch.setitem(registry.ESTIMATORS, "vllm", lambda ctx: FakeEstimator(name="lm:fake", kind="lm", down=True))
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator(name="nli:fake"))
    settings = make_settings(cache_dir, judge={"backend": "vllm", "base_url": "http://127.0.0.1:9/v1"},
                             lm={"backend": "vllm", "base_url": "http://127.0.0.1:9/v1", "model": "lm"})
    running = await start_server(settings, ["127.0.0.1:0"])
    try:
        yield running
    finally:
        await running.stop(0)


async def wait_loaded(channel):
    """Until both services have loaded and wait for their backends (no call is "still loading" any more)."""
    import asyncio

    for _ in range(3000):
        calls = (kgrpc.KnowledgeServiceStub(channel).ScoreKnowledge(knowledge(), timeout=HANG_GUARD_S),
                 iggrpc.InfoGainServiceStub(channel).ScoreInfoGain(igpb.ScoreInfoGainRequest(
                     question=ROW["question"], steps=ROW["steps"], answer=ROW["answer"]), timeout=HANG_GUARD_S))
        details = []
        for call in calls:
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == UNAVAILABLE, exc
                details.append(exc.details())
        if all("waiting for its backend" in d for d in details) and len(details) == 2:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the services never loaded")


def knowledge(judge=pb.JUDGE_BACKEND_UNSPECIFIED) -> kpb.ScoreKnowledgeRequest:
    return kpb.ScoreKnowledgeRequest(question=ROW["question"], steps=ROW["steps"],
                                     options=kpb.KnowledgeOptions(judge=judge))


async def test_a_call_naming_an_up_judge_is_served_while_the_default_judge_waits(server):
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        await wait_loaded(channel)
        stub = kgrpc.KnowledgeServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ScoreKnowledge(knowledge(), timeout=HANG_GUARD_S)
        assert refused.value.code() == UNAVAILABLE and "waiting for its backend" in refused.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as named_default:  # naming the waited-for judge changes nothing
            await stub.ScoreKnowledge(knowledge(pb.JUDGE_BACKEND_VLLM), timeout=HANG_GUARD_S)
        assert named_default.value.code() == UNAVAILABLE and "waiting" in named_default.value.details()

        served = await stub.ScoreKnowledge(knowledge(pb.JUDGE_BACKEND_NLI), timeout=HANG_GUARD_S)
        assert served.provenance.judge == "nli:fake" and len(served.steps) == 2

        nli = kpb.KnowledgeOptions(judge=pb.JUDGE_BACKEND_NLI)
        chain = await stub.ScoreChain(chain_request(ROW, metrics=("ki",), knowledge=nli), timeout=HANG_GUARD_S)
        assert chain.knowledge.provenance.judge == "nli:fake"

        async def items():
            yield kpb.StreamScoreChainsRequest(id="nli", chain=chain_request(ROW, metrics=("ki",), knowledge=nli))
            yield kpb.StreamScoreChainsRequest(id="default", chain=chain_request(ROW, metrics=("ki",)))

        responses = {r.id: r async for r in kgrpc.KnowledgeServiceStub(channel).StreamScoreChains(
            items(), timeout=HANG_GUARD_S)}
        assert responses["nli"].status.code == grpc.StatusCode.OK.value[0], responses["nli"].status
        assert responses["nli"].result == chain
        assert responses["default"].status.code == UNAVAILABLE.value[0]
        assert "waiting for its backend" in responses["default"].status.message


async def test_info_gain_naming_the_nli_estimator_is_served_while_the_default_lm_waits(server):
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        await wait_loaded(channel)
        stub = iggrpc.InfoGainServiceStub(channel)
        request = igpb.ScoreInfoGainRequest(question=ROW["question"], steps=ROW["steps"], answer=ROW["answer"])
        for estimator in (igpb.ESTIMATOR_UNSPECIFIED, igpb.ESTIMATOR_LM):
            request.options.estimator = estimator
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ScoreInfoGain(request, timeout=HANG_GUARD_S)
            assert refused.value.code() == UNAVAILABLE and "waiting for its backend" in refused.value.details()
        request.options.estimator = igpb.ESTIMATOR_NLI
        served = await stub.ScoreInfoGain(request, timeout=HANG_GUARD_S)
        assert len(served.steps) == 2 and served.provenance.estimator == "nli:fake"


async def test_the_cli_naming_an_up_judge_does_not_wait_for_the_default_one(server, tmp_path, capsys):
    """`kgverify evaluate --judge nli --server ADDR` waited (up to 300 s) for the knowledge service to be SERVING,
    i.e. for the default vLLM judge it does not use."""
    import asyncio

    from client import cli

    steps = tmp_path / "steps.txt"
    steps.write_text("\n".join(ROW["steps"]))
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        await wait_loaded(channel)
    argv = ["evaluate", "--server", server.addresses[0], "--question", ROW["question"], "--steps-file", str(steps),
            "--judge", "nli", "--metrics", "ki", "--json"]
    code = await asyncio.wait_for(asyncio.to_thread(cli.main, argv), HANG_GUARD_S)
    out = capsys.readouterr().out
    assert code == 0 and "nli:fake" in out


class DownSplitter:
    """A default splitter whose backend is down (an LLM decomposer whose vLLM is not up)."""

    name = "llm/1:fake"

    def __init__(self):
        from server.pipeline.splitter import RuleSplitter

        self.rules = RuleSplitter()

    def split_steps(self, steps, question=""):
        return self.rules.split_steps(steps, question)

    async def asplit(self, text, question, deadline):
        from server.pipeline.errors import BackendUnavailableError

        raise BackendUnavailableError("fake decomposer is down")

    async def ready(self):
        return False


async def test_pre_split_steps_are_served_while_the_default_llm_splitter_waits(cache_dir, demo_kb_path, monkeypatch):
    import asyncio

    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge(name="nli:fake"))
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator(name="nli:fake"))
    monkeypatch.setitem(registry.SPLITTERS, "llm", lambda ctx: DownSplitter())
    settings = make_settings(cache_dir, splitter={"backend": "llm", "base_url": "http://127.0.0.1:9/v1",
                                                  "model": "decomposer"})
    running = await start_server(settings, ["127.0.0.1:0"])
    try:
        await running.wait_ready(300)  # the InfoGain service; the knowledge service waits for its splitter
        async with grpc.aio.insecure_channel(running.addresses[0]) as channel:
            stub = kgrpc.KnowledgeServiceStub(channel)
            for _ in range(3000):  # until the knowledge service has loaded (then it waits for its splitter)
                try:
                    await stub.SplitReasoning(kpb.SplitReasoningRequest(steps=["A."]), timeout=HANG_GUARD_S)
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            served = await stub.ScoreKnowledge(knowledge(), timeout=HANG_GUARD_S)  # steps: no splitter call
            assert len(served.steps) == 2
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ScoreKnowledge(kpb.ScoreKnowledgeRequest(reasoning="Heparin is an anticoagulant."),
                                          timeout=HANG_GUARD_S)
            assert refused.value.code() == UNAVAILABLE and "waiting for its backend" in refused.value.details()
    finally:
        await running.stop(0)
