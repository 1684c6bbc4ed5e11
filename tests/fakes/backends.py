"""Fast, fault-injecting judge and InfoGain estimator, typed against the backend Protocols.

Tests register them with monkeypatch.setitem(registry.JUDGES, "nli", ...) so a
real server runs the real pipeline around them. Faults are switched on the instance:
`down` (ready() false, calls raise BackendUnavailableError), `delay_s` (every call
sleeps, ignoring the deadline like a hung backend would), `gate` (calls wait for it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from server.pipeline.errors import BackendUnavailableError
from server.pipeline.types import Judgement, LabelProbs, PrefixScores, Tier, Verdict


@dataclass
class FakeJudge:
    """Supports every claim at once (contradicts those with `contradict` in them) unless a fault is on."""

    name: str = "fake"
    prompt_version: str = ""
    down: bool = False
    delay_s: float = 0.0
    gate: asyncio.Event | None = None
    contradict: str | None = None  # claims containing this text are contradicted
    calls: int = 0
    claims: int = 0
    waiting: int = 0

    async def judge(self, items, deadline):
        self.calls += 1
        self.claims += len(items)
        if self.down:
            raise BackendUnavailableError("fake judge backend is down")
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [Judgement(Verdict.CONTRADICTED, LabelProbs(0.05, 0.9, 0.05), Tier.EMBEDDED)
                if self.contradict and self.contradict in item.claim
                else Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.EMBEDDED) for item in items]

    async def ready(self) -> bool:
        return not self.down


@dataclass
class FakeEstimator:
    """Answer NLL that falls with every step (2 / (1 + i) nats), without a model."""

    name: str = "fake"
    kind: str = "nli"
    down: bool = False
    calls: list[int] = field(default_factory=list)

    async def score_prefixes(self, context0, steps, target, deadline) -> PrefixScores:
        self.calls.append(len(steps))
        if self.down:
            raise BackendUnavailableError("fake estimator backend is down")
        return PrefixScores(nll=tuple(2.0 / (1 + i) for i in range(len(steps) + 1)), answer_tokens=0)

    async def paper_perplexities(self, context0, steps, target, deadline):
        raise BackendUnavailableError("the fake estimator has no paper mode")

    async def ready(self) -> bool:
        return not self.down
