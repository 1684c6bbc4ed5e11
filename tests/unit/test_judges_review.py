"""Judges and the verdict cache: single flight under deadlines, and what the cache holds."""

from __future__ import annotations

import asyncio

import pytest

from server.backends.judges.cache import VerdictCache
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendTimeoutError
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Judgement, LabelProbs, Tier, Verdict

SUPPORTED = Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.EMBEDDED)
ITEM = JudgeItem("Metformin is first-line.", (Evidence("treat-0001", "Metformin is the first-line drug.", "src",
                                                       "title", 0.7, EvidenceOrigin.KNOWLEDGE_BASE),))


class DeadlineJudge:
    """The first call never ends (a slow LLM tier); later calls answer at once, but, like the embedded judge's
    batcher, only while the deadline they are given has not passed."""

    name = "slow-first"
    prompt_version = "p1"

    def __init__(self):
        self.calls = 0

    async def judge(self, items, deadline):
        self.calls += 1
        if self.calls == 1:
            await asyncio.Event().wait()
        if deadline.expired():
            raise BackendTimeoutError("the deadline expired while waiting for the model")
        return [SUPPORTED for _ in items]


async def test_a_waiter_stops_waiting_with_time_left_to_judge_its_claims_itself():
    cache, judge = VerdictCache(100), DeadlineJudge()
    owner = asyncio.ensure_future(cache.judge_through(judge, [ITEM], Deadline.after(60)))
    while judge.calls < 1:
        await asyncio.sleep(0)
    (waiter,) = await cache.judge_through(judge, [ITEM], Deadline.after(1.0))
    assert judge.calls == 2 and waiter.verdict is Verdict.SUPPORTED and not waiter.cached
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
