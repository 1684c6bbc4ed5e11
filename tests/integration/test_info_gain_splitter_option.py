"""InfoGain splits free-text reasoning with the splitter the caller names, like KI: ScoreInfoGain had no splitter
option, so a chain scored with the LLM decomposer for KI got other steps for InfoGain alone (the server's default
splitter), and the Python client's score_info_gain(splitter=...) dropped the option without a word."""

from __future__ import annotations

import grpc
import pytest

from client import AsyncVerifierClient
from client.requests import chain_request, info_gain_options, knowledge_options, score_info_gain_request
from kgverify.v1 import common_pb2 as pb
from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import info_gain_service_pb2_grpc as iggrpc
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc
from server.app import start_server
from server.pipeline.splitter import RuleSplitter
from tests.conftest import make_settings

HANG_GUARD_S = 60  # only catches a hang; nothing here depends on timing
ROW = {"question": "What reverses heparin?", "answer": "protamine sulfate",
       "reasoning": "Heparin is an anticoagulant. Step 2: Protamine sulfate binds heparin. "
                    "Step 3: So protamine sulfate reverses it."}


class OneStepSplitter(RuleSplitter):
    """A splitter other than the default: the whole reasoning is one step."""

    name = "one-step"

    def split(self, text: str, question: str = ""):
        return self.split_steps([text], question)


@pytest.fixture
async def server(cache_dir, demo_kb_path, monkeypatch):
    from server.backends import registry
    from tests.fakes.backends import FakeEstimator, FakeJudge

    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    monkeypatch.setitem(registry.SPLITTERS, "llm", lambda ctx: OneStepSplitter())
    running = await start_server(make_settings(cache_dir), ["127.0.0.1:0"])
    try:
        await running.wait_ready(300)
        yield running
    finally:
        await running.stop(0)


def info_gain_request(splitter=pb.SPLITTER_UNSPECIFIED) -> igpb.ScoreInfoGainRequest:
    return igpb.ScoreInfoGainRequest(question=ROW["question"], reasoning=ROW["reasoning"], answer=ROW["answer"],
                                     options=igpb.InfoGainOptions(splitter=splitter))


async def test_score_info_gain_splits_with_the_splitter_it_names(server):
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = iggrpc.InfoGainServiceStub(channel)
        default = await stub.ScoreInfoGain(info_gain_request(), timeout=HANG_GUARD_S)
        named = await stub.ScoreInfoGain(info_gain_request(pb.SPLITTER_LLM), timeout=HANG_GUARD_S)
        rules = await stub.ScoreInfoGain(info_gain_request(pb.SPLITTER_RULES), timeout=HANG_GUARD_S)
    assert len(default.steps) == 3 and default.provenance.splitter.startswith("rules")
    assert len(named.steps) == 1 and named.provenance.splitter == "one-step"
    assert rules == default


async def test_score_chain_shares_the_named_split_between_the_metrics(server):
    both_llm = chain_request(ROW, knowledge=knowledge_options(splitter="llm"))
    ig_named = chain_request(ROW, metrics=("infogain",), info_gain=info_gain_options(splitter="llm"))
    ki_named_ig_named = chain_request(ROW, knowledge=knowledge_options(splitter="llm"),
                                      info_gain=info_gain_options(splitter="llm"))
    clash = chain_request(ROW, knowledge=knowledge_options(splitter="rules"),
                          info_gain=info_gain_options(splitter="llm"))
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = kgrpc.KnowledgeServiceStub(channel)
        out = await stub.ScoreChain(both_llm, timeout=HANG_GUARD_S)
        assert len(out.knowledge.steps) == len(out.info_gain.steps) == 1
        out = await stub.ScoreChain(ig_named, timeout=HANG_GUARD_S)
        assert len(out.info_gain.steps) == 1 and out.info_gain.provenance.splitter == "one-step"
        out = await stub.ScoreChain(ki_named_ig_named, timeout=HANG_GUARD_S)
        assert len(out.knowledge.steps) == len(out.info_gain.steps) == 1
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ScoreChain(clash, timeout=HANG_GUARD_S)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "info_gain_options.splitter" in refused.value.details()
    assert "knowledge_options.splitter is 'rules'" in refused.value.details()


async def test_the_python_client_sends_the_splitter_for_info_gain(server):
    assert score_info_gain_request({**ROW, "splitter": "llm"}).options.splitter == pb.SPLITTER_LLM
    async with AsyncVerifierClient(server.addresses[0]) as client:
        alone = await client.score_info_gain(**ROW, splitter="llm")
        chained = await client.score_chain(**ROW, splitter="llm")
    assert len(alone.steps) == 1 and len(chained.steps) == 1
