"""A claim no evidence was found for is not judged, whichever judge: not_enough_info (0, 0, 1) with tier NONE
(the embedded judges said EMBEDDED while the LLM judge said NONE, so the same request read differently by judge)."""

from __future__ import annotations

import numpy as np

from server.backends.judges.cascade import CascadeJudge
from server.backends.judges.embedded import EmbeddedJudge
from server.pipeline.deadline import Deadline
from server.pipeline.runtime import Blocking
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Tier, Verdict


class Supporting:
    name = "supporting"

    def predict_proba(self, pairs):
        return np.array([[0.95, 0.03, 0.02]] * len(pairs))


class NoLlm:
    name, prompt_version = "llm", "llm-prompt"
    asked = 0

    async def judge(self, items, deadline):
        self.asked += len(items)
        raise AssertionError("a claim without evidence reached the LLM")

    async def ready(self):
        return True


EVIDENCE = (Evidence("f1", "Warfarin is a vitamin K antagonist.", "", "", 0.9, EvidenceOrigin.KNOWLEDGE_BASE),)
ITEMS = [JudgeItem("Warfarin is a vitamin K antagonist.", EVIDENCE), JudgeItem("Nothing was found for this.", ()),
         JudgeItem("Only blank evidence.", (Evidence("f2", "   ", "", "", 0.5, EvidenceOrigin.CONTEXT),))]


async def test_the_embedded_judge_and_the_cascade_report_tier_none_for_a_claim_without_evidence():
    embedded = EmbeddedJudge(Supporting(), Blocking(None))
    llm = NoLlm()
    for judge in (embedded, CascadeJudge(embedded, llm, 0.8)):
        out = await judge.judge(ITEMS, Deadline())
        assert [j.tier for j in out] == [Tier.EMBEDDED, Tier.NONE, Tier.NONE]
        assert [j.verdict for j in out] == [Verdict.SUPPORTED, Verdict.NOT_ENOUGH_INFO, Verdict.NOT_ENOUGH_INFO]
        assert all((j.probabilities.supported, j.probabilities.contradicted, j.probabilities.not_enough_info)
                   == (0.0, 0.0, 1.0) for j in out[1:])
        assert all(j.llm_calls == 0 for j in out)
    assert llm.asked == 0
