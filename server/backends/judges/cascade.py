"""The cascade judge: the embedded judge first, uncertain or contradicted claims escalated to the LLM judge."""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import BackendTimeoutError, BackendUnavailableError
from ...pipeline.types import JudgeItem, Judgement, Tier, Verdict

log = logging.getLogger(__name__)


def needs_llm(judgement: Judgement, threshold: float) -> bool:
    """Escalation policy: contradictions (the costly verdict to get wrong), errors, and low confidence."""
    if judgement.verdict in (Verdict.CONTRADICTED, Verdict.ERROR) or judgement.probabilities is None:
        return True
    return judgement.probabilities.confidence() < threshold


class CascadeJudge:
    """Judge port: every claim gets the embedded verdict; those the policy escalates get the LLM's instead.

    When the LLM judge is unreachable, too slow, or does not serve its model, escalated claims keep their
    embedded verdict with tier DEGRADED (and the reason in `error`) and the request still succeeds.
    """

    def __init__(self, embedded, llm, threshold: float):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"cascade threshold must be in [0, 1], not {threshold}")
        self.embedded = embedded
        self.llm = llm
        self.threshold = threshold
        self.name = f"cascade[{embedded.name} <{threshold:g} {llm.name}]"
        self.prompt_version = f"{llm.prompt_version};{embedded.prompt_version}"
        self.escalated = 0  # claims sent to the LLM tier since start
        self.degraded = 0  # escalated claims that kept the embedded verdict because the LLM tier was down

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        first = await self.embedded.judge(items, deadline)
        picked = [i for i, (item, j) in enumerate(zip(items, first)) if item.evidence and needs_llm(j, self.threshold)]
        if not picked:
            return first
        self.escalated += len(picked)
        out = list(first)
        try:
            second = await self.llm.judge([items[i] for i in picked], deadline)
        except (BackendUnavailableError, BackendTimeoutError) as exc:
            self.degraded += len(picked)
            log.warning("LLM judge tier down (%s); %d claim(s) keep the embedded verdict", exc.message, len(picked))
            why = f"LLM judge tier down, embedded verdict kept: {exc.message}"
            for i in picked:
                out[i] = dataclasses.replace(first[i], tier=Tier.DEGRADED, error=why)
            return out
        for i, judgement in zip(picked, second):
            out[i] = judgement
        return out

    async def ready(self) -> bool:
        # The cascade serves (degraded) without its LLM tier; it needs only the embedded judge.
        return await self.embedded.ready()

    async def aclose(self) -> None:
        closer = getattr(self.llm, "aclose", None)
        if closer is not None:
            await closer()
