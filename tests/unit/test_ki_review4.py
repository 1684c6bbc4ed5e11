"""KI pipeline review: ScoreChain's two metrics fail together, the verdict cache key, validation of the KI options."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.judges.cache import VerdictCache, cache_key
from server.pipeline import scoring
from server.pipeline.deadline import Deadline
from server.pipeline.deps import PipelineDeps
from server.pipeline.errors import BackendUnavailableError
from server.pipeline.runtime import Blocking
from server.pipeline.splitter import RuleSplitter
from server.pipeline.types import (ChainInput, ChainRequest, Evidence, EvidenceOrigin, InfoGainRequest, JudgeItem,
                                   Judgement, KnowledgeOptions, KnowledgeRequest, LabelProbs, Passage, Tier, Verdict)
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


class _TitleReadingJudge:
    """Supports a claim only when an evidence title names it (the LLM judge reads titles); counts its calls."""

    name = "reads-titles"
    prompt_version = "v1"

    def __init__(self):
        self.calls = 0

    async def judge(self, items, deadline):
        self.calls += len(items)
        return [Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.LLM, llm_calls=1)
                if any(e.title.strip() for e in item.evidence)
                else Judgement(Verdict.NOT_ENOUGH_INFO, LabelProbs(0.1, 0.1, 0.8), Tier.LLM, llm_calls=1)
                for item in items]


def _context(text: str, title: str = "", source: str = "") -> Evidence:
    return Evidence("context:0", text, source, title, 0.5, EvidenceOrigin.CONTEXT)


@pytest.mark.parametrize("one, other", [
    (_context("Warfarin\x1fWarfarin"), _context("Warfarin", title="Warfarin\x1f")),
    (_context("Warfarin", title="\x1f"), _context("Warfarin", source="\x1f")),
    (_context("Warfarin\x1f"), _context("Warfarin", title="\x1f")),
])
async def test_evidence_that_differs_never_shares_a_verdict(one, other):
    """Text, title and source are told apart in the key whatever characters they hold: a control character in a
    passage made two different passages one key, and the second request got the first one's verdict."""
    assert cache_key(JudgeItem("c", (one,)), "j", "v", "") != cache_key(JudgeItem("c", (other,)), "j", "v", "")
    judge, cache = _TitleReadingJudge(), VerdictCache(16)
    claim = "Warfarin is a vitamin K antagonist."
    first = await cache.judge_through(judge, [JudgeItem(claim, (one,))], Deadline())
    second = await cache.judge_through(judge, [JudgeItem(claim, (other,))], Deadline())
    assert judge.calls == 2 and not second[0].cached
    assert (first[0].verdict is Verdict.SUPPORTED) == bool(one.title.strip())
    assert (second[0].verdict is Verdict.SUPPORTED) == bool(other.title.strip())
