"""KI pipeline review: ScoreChain's two metrics fail together, the verdict cache key, validation of the KI options."""

from __future__ import annotations

import asyncio

import pytest

from server.pipeline import scoring
from server.pipeline.deadline import Deadline
from server.pipeline.deps import PipelineDeps
from server.pipeline.errors import BackendUnavailableError
from server.pipeline.runtime import Blocking
from server.pipeline.splitter import RuleSplitter
from server.pipeline.types import (ChainInput, ChainRequest, InfoGainRequest, KnowledgeOptions, KnowledgeRequest,
                                   Passage)
from server.pipeline.validation import Limits
from tests.fakes.backends import FakeEstimator, FakeJudge

import numpy as np

CHAIN = ChainInput(question="Which drug is first-line for type 2 diabetes?",
                   steps=("Metformin is the usual first-line drug for type 2 diabetes.", "So the answer is metformin."))


def _deps(judge, estimator) -> PipelineDeps:
    splitter = RuleSplitter()

    async def get_splitter(name):
        return splitter

    async def get_judge(name):
        return judge

    async def get_estimator(name):
        return estimator

    async def embed(texts, deadline):
        return np.ones((len(texts), 4), dtype=np.float32)

    return PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=get_splitter, judge=get_judge,
                        estimator=get_estimator, knowledge_base=lambda: None, embedder=lambda: None, embed=embed)


async def test_score_chain_fails_as_soon_as_one_metric_fails_and_stops_the_other():
    """InfoGain's LM down (UNAVAILABLE, the one code clients retry) while the judge is still busy: the call fails
    UNAVAILABLE at once and the judging stops, instead of waiting for it (a hung or slow judge turned the outage
    into DEADLINE_EXCEEDED, and every retry paid for a full KI that was thrown away)."""
    judge = FakeJudge(gate=asyncio.Event())  # never opened: the judge would wait forever
    deps = _deps(judge, FakeEstimator(down=True))
    req = ChainRequest(
        KnowledgeRequest(CHAIN, (Passage("p", "Metformin is first-line therapy for type 2 diabetes."),)),
        InfoGainRequest(CHAIN, answer="metformin"))
    call = asyncio.ensure_future(scoring.chain(req, deps, Deadline()))
    # a guard against hanging, not a timing assertion: the failure comes as soon as the estimator answers
    done, _ = await asyncio.wait([call], timeout=30)
    if not done:
        judge.gate.set()
        await asyncio.wait([call])
        pytest.fail("ScoreChain waited for the knowledge score after InfoGain had failed")
    with pytest.raises(BackendUnavailableError, match="fake estimator"):
        call.result()
    assert judge.waiting == 1
    await asyncio.sleep(0)
    judge.gate.set()  # a judging task still running would now go on and return
    await asyncio.sleep(0)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                and "score_knowledge" in repr(t.get_coro())]


async def test_score_chain_returns_both_metrics():
    deps = _deps(FakeJudge(), FakeEstimator())
    req = ChainRequest(
        KnowledgeRequest(CHAIN, (Passage("p", "Metformin is first-line therapy for type 2 diabetes."),),
                         KnowledgeOptions(top_k=1)),
        InfoGainRequest(CHAIN, answer="metformin"))
    result = await scoring.chain(req, deps, Deadline())
    assert result.knowledge.knowledge_index == 1.0 and result.info_gain.info_gain is not None
