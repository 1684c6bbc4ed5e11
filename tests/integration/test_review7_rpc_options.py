"""ScoreChain checks the options of the metrics it is asked for only, as it does their fields."""

from __future__ import annotations

import grpc
import pytest

from kgverify.v1 import info_gain_service_pb2 as igpb
from kgverify.v1 import knowledge_service_pb2 as kpb
from kgverify.v1 import knowledge_service_pb2_grpc as kgrpc

CHAIN = {"question": "Which drug is the usual first choice for type 2 diabetes?",
         "steps": ["Metformin is the usual first-line drug for type 2 diabetes.", "So the answer is metformin."],
         "answer": "Metformin"}


async def _score(verifier, request: kpb.ScoreChainRequest) -> kpb.ScoreChainResponse:
    async with grpc.aio.insecure_channel(verifier.addresses[0]) as channel:
        return await kgrpc.KnowledgeServiceStub(channel).ScoreChain(request, timeout=120)


async def test_an_info_gain_only_chain_ignores_its_knowledge_options_whatever_they_hold(verifier):
    # top_k 99 (over the limit) and use_knowledge_base false without context already passed: -1 and an unknown
    # judge failed the chain, though no knowledge is scored
    for options in (kpb.KnowledgeOptions(top_k=99, use_knowledge_base=False),
                    kpb.KnowledgeOptions(top_k=-1, judge=42, retrieval_mode=7, splitter=9)):
        response = await _score(verifier, kpb.ScoreChainRequest(**CHAIN, metrics=[kpb.METRIC_INFO_GAIN],
                                                                knowledge_options=options))
        assert response.HasField("info_gain") and not response.HasField("knowledge")
        assert len(response.info_gain.steps) == 2


async def test_a_knowledge_only_chain_ignores_its_info_gain_options_whatever_they_hold(verifier):
    plain = await _score(verifier, kpb.ScoreChainRequest(**CHAIN, metrics=[kpb.METRIC_KNOWLEDGE_INDEX]))
    for options in (igpb.InfoGainOptions(window=5_000, mode=igpb.INFO_GAIN_MODE_PAPER, estimator=igpb.ESTIMATOR_NLI),
                    igpb.InfoGainOptions(window=-1, estimator=9, mode=9, units=9)):
        response = await _score(verifier, kpb.ScoreChainRequest(**CHAIN, metrics=[kpb.METRIC_KNOWLEDGE_INDEX],
                                                                info_gain_options=options))
        assert response.HasField("knowledge") and not response.HasField("info_gain")
        assert [s.verdict for s in response.knowledge.steps] == [s.verdict for s in plain.knowledge.steps]


@pytest.mark.parametrize("metrics, field", [([], "knowledge_options.top_k"),
                                            ([kpb.METRIC_KNOWLEDGE_INDEX], "knowledge_options.top_k"),
                                            ([kpb.METRIC_INFO_GAIN], "info_gain_options.window")])
async def test_the_options_of_a_metric_asked_for_are_still_checked(verifier, metrics, field):
    request = kpb.ScoreChainRequest(**CHAIN, metrics=metrics, knowledge_options=kpb.KnowledgeOptions(top_k=-1),
                                    info_gain_options=igpb.InfoGainOptions(window=-1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _score(verifier, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()
