"""The cascade judge: the embedded judge first, uncertain or contradicted claims escalated to the LLM judge."""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import BackendTimeoutError, BackendUnavailableError
from ...pipeline.types import JudgeItem, Judgement, Tier, Verdict
from .vllm_judge import PromptTooLongError

log = logging.getLogger(__name__)


def needs_llm(judgement: Judgement, threshold: float) -> bool:
    """Escalation policy: contradictions (the costly verdict to get wrong), errors, and low confidence.

    A verdict that is not its probabilities' top label (KGV_JUDGE__MIN_DECISIVE_PROBABILITY left the claim
    not settled) is low confidence whatever the threshold: with the minimum above the threshold, a claim whose
    top label had a probability between the two was answered not_enough_info by neither tier."""
    probabilities = judgement.probabilities
    if judgement.verdict in (Verdict.CONTRADICTED, Verdict.ERROR) or probabilities is None:
        return True
    return judgement.verdict != probabilities.verdict() or probabilities.confidence() < threshold


LLM_RESERVE_MIN_S = 0.2  # time kept back from the LLM tier to send the degraded verdicts
LLM_RESERVE_SHARE = 0.1


def llm_tier_deadline(deadline: Deadline) -> Deadline:
    """The request's deadline less a reserve (max(0.2 s, 10% of the remaining time)).

    The LLM tier must give up before the RPC does: with its timeout cut to exactly the request's remaining
    time, the call would time out when the client already has DEADLINE_EXCEEDED, and the degraded
    verdicts (the cascade's promise) would never be sent.
    """
    remaining = deadline.remaining()
    if remaining is None or deadline.at is None:
        return deadline
    reserve = max(LLM_RESERVE_MIN_S, LLM_RESERVE_SHARE * remaining)
    return dataclasses.replace(deadline, at=deadline.at - reserve)  # keeps what set it (Deadline.limit)


class CascadeJudge:
    """Judge port: every claim gets the embedded verdict; those the policy escalates get the LLM's instead.

    When the LLM judge is unreachable, too slow, or does not serve its model, escalated claims keep their
    embedded verdict with tier DEGRADED (and the reason in `error`) and the request still succeeds; so does a
    claim whose prompt does not fit the judge model's context.
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
        self.degraded = 0  # escalated claims that kept the embedded verdict (LLM tier down, or prompt too long)

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        first = await self.embedded.judge(items, deadline)
        picked = [i for i, (item, j) in enumerate(zip(items, first)) if item.evidence and needs_llm(j, self.threshold)]
        if not picked:
            return first
        self.escalated += len(picked)
        out = list(first)
        asked = [items[i] for i in picked]
        llm_deadline = llm_tier_deadline(deadline)
        each = getattr(self.llm, "judge_each", None)
        try:
            if each is not None:
                second = await each(asked, llm_deadline)
            else:
                second = await self.llm.judge(asked, llm_deadline)
        except (BackendUnavailableError, BackendTimeoutError) as exc:
            second = [exc] * len(picked)
        down = [r for r in second if isinstance(r, (BackendUnavailableError, BackendTimeoutError))]
        unread = [r for r in second if isinstance(r, PromptTooLongError)]
        if down:
            log.warning("LLM judge tier down (%s); %d of %d escalated claim(s) keep the embedded verdict",
                        down[0].message, len(down), len(picked))
        if unread:
            log.warning("LLM judge cannot read %d of %d escalated claim(s) (%s); they keep the embedded verdict",
                        len(unread), len(picked), unread[0])
        self.degraded += len(down) + len(unread)
        for i, result in zip(picked, second):
            if isinstance(result, (BackendUnavailableError, BackendTimeoutError, PromptTooLongError)):
                if isinstance(result, PromptTooLongError):
                    # The LLM tier is up but cannot read this claim's prompt: the embedded verdict is the best
                    # there is, as when the tier is down (an ERROR would drop a verdict the server has).
                    why = f"LLM judge cannot read this claim: {result}"
                else:
                    why = f"LLM judge tier down: {result.message}"
                if first[i].error:  # the embedded verdict was itself an ERROR: keep its reason
                    why = f"{first[i].error}; {why}"
                else:
                    why = f"{why} (embedded verdict kept)"
                # the escalation was an attempted LLM call, answered or not
                out[i] = dataclasses.replace(first[i], tier=Tier.DEGRADED, error=why,
                                             llm_calls=first[i].llm_calls + 1)
            else:
                out[i] = result
        return out

    async def cache_identity(self, deadline: Deadline) -> str | None:
        """The cascade as the verdict cache keys it: with the LLM tier's model (None while that cannot be read)."""
        identity = getattr(self.llm, "cache_identity", None)
        if identity is None:
            return self.name
        llm = await identity(llm_tier_deadline(deadline))  # (its first read waits within the LLM tier's time)
        return None if llm is None else f"cascade[{self.embedded.name} <{self.threshold:g} {llm}]"

    async def read_served_model(self, deadline: Deadline) -> str:
        """The weights behind the LLM tier's model name ("" while unknown): the provenance's judge_model."""
        served = getattr(self.llm, "read_served_model", None)
        return await served(llm_tier_deadline(deadline)) if served is not None else ""

    async def ready(self) -> bool:
        # The cascade serves (degraded) without its LLM tier; it needs only the embedded judge.
        return await self.embedded.ready()

    async def aclose(self) -> None:
        closer = getattr(self.llm, "aclose", None)
        if closer is not None:
            await closer()
