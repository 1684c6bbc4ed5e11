"""The cascade's escalation policy, tiers, LLM call counts and degraded mode (fake judges, no sockets)."""

from __future__ import annotations

import pytest

from server.backends.judges.cascade import CascadeJudge, needs_llm
from server.pipeline.deadline import Deadline
from server.pipeline.errors import BackendResponseError, BackendTimeoutError, BackendUnavailableError
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Judgement, LabelProbs, Tier, Verdict

EVIDENCE = (Evidence("f1", "Warfarin is a vitamin K antagonist.", "src", "", 0.8, EvidenceOrigin.KNOWLEDGE_BASE),)


class FakeJudge:
    """Answers from a table claim -> judgement; counts the claims it was asked about."""

    def __init__(self, name: str, table: dict[str, Judgement], fail: Exception | None = None, ready: bool = True):
        self.name = name
        self.prompt_version = f"{name}-prompt"
        self.table = table
        self.fail = fail
        self.asked: list[str] = []
        self._ready = ready

    async def judge(self, items, deadline):
        self.asked.extend(item.claim for item in items)
        if self.fail is not None:
            raise self.fail
        return [self.table[item.claim] for item in items]

    async def ready(self):
        return self._ready


def j(verdict: Verdict, probs: tuple[float, float, float] | None, tier: Tier, llm_calls: int = 0) -> Judgement:
    return Judgement(verdict, LabelProbs(*probs) if probs else None, tier, llm_calls=llm_calls,
                     error="" if probs else "bad output")


EMBEDDED = {
    "confident": j(Verdict.SUPPORTED, (0.95, 0.03, 0.02), Tier.EMBEDDED),
    "unsure": j(Verdict.SUPPORTED, (0.55, 0.15, 0.30), Tier.EMBEDDED),
    "contradicted": j(Verdict.CONTRADICTED, (0.01, 0.98, 0.01), Tier.EMBEDDED),
    "no evidence": j(Verdict.NOT_ENOUGH_INFO, (0.0, 0.0, 1.0), Tier.EMBEDDED),
    "unsure nei": j(Verdict.NOT_ENOUGH_INFO, (0.3, 0.1, 0.6), Tier.EMBEDDED),
}
LLM = {
    "unsure": j(Verdict.NOT_ENOUGH_INFO, (0.1, 0.1, 0.8), Tier.LLM, 1),
    "contradicted": j(Verdict.CONTRADICTED, (0.02, 0.97, 0.01), Tier.LLM, 1),
    "unsure nei": j(Verdict.ERROR, None, Tier.LLM, 1),
}


def items(*claims: str) -> list[JudgeItem]:
    return [JudgeItem(c, () if c == "no evidence" else EVIDENCE) for c in claims]


def test_policy_escalates_low_confidence_contradictions_and_errors():
    assert not needs_llm(EMBEDDED["confident"], 0.8)
    assert needs_llm(EMBEDDED["unsure"], 0.8)
    assert needs_llm(EMBEDDED["contradicted"], 0.8)  # even when the embedded judge is sure
    assert needs_llm(j(Verdict.ERROR, None, Tier.EMBEDDED), 0.8)
    assert not needs_llm(EMBEDDED["unsure"], 0.5)
    assert needs_llm(EMBEDDED["confident"], 1.0)


def test_policy_escalates_a_claim_the_minimum_decisive_probability_left_unsettled():
    # min decisive 0.9 above the threshold 0.8: top label supported at 0.85, so the verdict is not_enough_info
    unsettled = j(Verdict.NOT_ENOUGH_INFO, (0.85, 0.05, 0.10), Tier.EMBEDDED)
    assert needs_llm(unsettled, 0.8)
    assert needs_llm(j(Verdict.NOT_ENOUGH_INFO, (0.05, 0.85, 0.10), Tier.EMBEDDED), 0.8)
    assert not needs_llm(j(Verdict.NOT_ENOUGH_INFO, (0.05, 0.10, 0.85), Tier.EMBEDDED), 0.8)  # settled: no info


async def test_each_claim_says_which_tier_decided():
    embedded, llm = FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM)
    cascade = CascadeJudge(embedded, llm, 0.8)
    claims = ["confident", "unsure", "contradicted", "no evidence", "unsure nei"]
    out = await cascade.judge(items(*claims), Deadline())
    assert llm.asked == ["unsure", "contradicted", "unsure nei"]  # no evidence: nothing for the LLM to read
    assert [o.tier for o in out] == [Tier.EMBEDDED, Tier.LLM, Tier.LLM, Tier.EMBEDDED, Tier.LLM]
    assert [o.verdict for o in out] == [Verdict.SUPPORTED, Verdict.NOT_ENOUGH_INFO, Verdict.CONTRADICTED,
                                        Verdict.NOT_ENOUGH_INFO, Verdict.ERROR]
    assert sum(o.llm_calls for o in out) == 3
    assert out[4].error  # unusable LLM output is an ERROR with its reason, not the embedded guess
    assert cascade.escalated == 3 and cascade.degraded == 0


async def test_nothing_to_escalate_makes_no_llm_call():
    llm = FakeJudge("llm", LLM)
    out = await CascadeJudge(FakeJudge("emb", EMBEDDED), llm, 0.8).judge(items("confident"), Deadline())
    assert llm.asked == [] and out[0].tier is Tier.EMBEDDED and out[0].llm_calls == 0


@pytest.mark.parametrize("failure", [BackendUnavailableError("connection refused"),
                                     BackendTimeoutError("no answer within 30 s")])
async def test_llm_tier_down_keeps_the_embedded_verdict_as_degraded(failure):
    cascade = CascadeJudge(FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM, fail=failure), 0.8)
    out = await cascade.judge(items("confident", "unsure", "contradicted"), Deadline())
    assert [o.tier for o in out] == [Tier.EMBEDDED, Tier.DEGRADED, Tier.DEGRADED]
    assert [o.verdict for o in out] == [Verdict.SUPPORTED, Verdict.SUPPORTED, Verdict.CONTRADICTED]
    assert out[1].probabilities == EMBEDDED["unsure"].probabilities
    assert cascade.degraded == 2 and "LLM judge tier down" in out[1].error and not out[0].error


async def test_other_llm_failures_are_not_hidden():
    cascade = CascadeJudge(FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM, fail=RuntimeError("bug")), 0.8)
    with pytest.raises(RuntimeError):
        await cascade.judge(items("unsure"), Deadline())
    bad = CascadeJudge(FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM, fail=BackendResponseError("x")), 0.8)
    with pytest.raises(BackendResponseError):  # the LLM judge reports these per claim; raising is a bug
        await bad.judge(items("unsure"), Deadline())


async def test_ready_needs_only_the_embedded_tier_and_names_carry_the_policy():
    cascade = CascadeJudge(FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM, ready=False), 0.75)
    assert await cascade.ready()
    assert not await CascadeJudge(FakeJudge("emb", EMBEDDED, ready=False), FakeJudge("llm", LLM), 0.8).ready()
    assert "0.75" in cascade.name and "emb" in cascade.name and "llm" in cascade.name
    assert cascade.prompt_version == "llm-prompt;emb-prompt"
    with pytest.raises(ValueError):
        CascadeJudge(FakeJudge("emb", EMBEDDED), FakeJudge("llm", LLM), 1.5)


class PerClaimJudge(FakeJudge):
    """An LLM tier answering claim by claim: a table entry that is an exception is that claim's outage."""

    def __init__(self, name, table, delay_to_deadline: bool = False):
        super().__init__(name, table)
        self.delay_to_deadline = delay_to_deadline
        self.deadlines = []

    async def judge_each(self, items, deadline):
        import asyncio
        self.deadlines.append(deadline)
        self.asked.extend(item.claim for item in items)
        if self.delay_to_deadline:  # like a client whose timeout is cut to the deadline it is given
            await asyncio.sleep(deadline.remaining())
            return [BackendTimeoutError("no answer within the deadline") for _ in items]
        return [self.table[item.claim] for item in items]


async def test_llm_tier_gives_up_before_the_request_deadline_so_degraded_verdicts_are_sent():
    import time
    llm = PerClaimJudge("llm", LLM, delay_to_deadline=True)
    cascade = CascadeJudge(FakeJudge("emb", EMBEDDED), llm, 0.8)
    deadline = Deadline.after(1.0)  # shorter than any KGV_JUDGE__TIMEOUT_S
    out = await cascade.judge(items("unsure"), deadline)
    assert out[0].tier is Tier.DEGRADED
    assert deadline.at - time.monotonic() >= 0.15  # time left to send the answer
    assert llm.deadlines[0].at <= deadline.at - 0.2


async def test_one_failed_llm_call_degrades_only_its_claim_and_keeps_the_others():
    table = {**LLM, "unsure": BackendUnavailableError("HTTP 503")}
    cascade = CascadeJudge(FakeJudge("emb", EMBEDDED), PerClaimJudge("llm", table), 0.8)
    out = await cascade.judge(items("unsure", "contradicted"), Deadline())
    assert [o.tier for o in out] == [Tier.DEGRADED, Tier.LLM]
    assert out[1] == LLM["contradicted"]
    assert [o.llm_calls for o in out] == [1, 1]  # attempted calls count, answered or not
    assert cascade.degraded == 1


async def test_degraded_embedded_error_keeps_its_own_reason():
    embedded = {"broken": j(Verdict.ERROR, None, Tier.EMBEDDED)}
    cascade = CascadeJudge(FakeJudge("emb", embedded),
                           FakeJudge("llm", {}, fail=BackendUnavailableError("connection refused")), 0.8)
    (out,) = await cascade.judge(items("broken"), Deadline())
    assert out.tier is Tier.DEGRADED and out.verdict is Verdict.ERROR
    assert out.error.startswith("bad output") and "connection refused" in out.error
    assert "embedded verdict kept" not in out.error
