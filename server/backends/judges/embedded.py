"""The embedded judge: a pair scorer over each claim's evidence, aggregated per claim."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...pipeline.deadline import Deadline
from ...pipeline.runtime import Blocking
from ...pipeline.types import Evidence, JudgeItem, Judgement, LabelProbs, Tier, Verdict

SUPPORTED, CONTRADICTED, NOT_ENOUGH_INFO = 0, 1, 2
NO_EVIDENCE = LabelProbs(0.0, 0.0, 1.0)


def aggregate_evidence(probs: np.ndarray, evidence: Sequence[Evidence]) -> tuple[LabelProbs, tuple[Evidence, ...]]:
    """One claim's label probabilities from the rows of its evidence.

    Support needs one fact that entails the claim; contradiction needs one fact
    whose strongest label is contradiction; otherwise the claim is not settled
    and the most decisive fact's row stands. The deciding fact comes first.
    """
    if len(evidence) == 0:
        return NO_EVIDENCE, ()
    labels = probs.argmax(axis=1)
    best_support = int(probs[:, SUPPORTED].argmax())
    best_contra = int(probs[:, CONTRADICTED].argmax())
    if labels[best_support] == SUPPORTED:
        decider = best_support
    elif labels[best_contra] == CONTRADICTED:
        decider = best_contra
    else:
        decider = int((1.0 - probs[:, NOT_ENOUGH_INFO]).argmax())
    ordered = (evidence[decider],) + tuple(e for j, e in enumerate(evidence) if j != decider)
    return LabelProbs.from_row(probs[decider]), ordered


class EmbeddedJudge:
    """Judges claims with a local pair scorer (the similarity baseline or the NLI model)."""

    prompt_version = ""

    def __init__(self, scorer, blocking: Blocking):
        self.scorer = scorer
        self.name = scorer.name
        self._blocking = blocking

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        pairs = [(e.text, item.claim) for item in items for e in item.evidence]
        probs = await self._blocking.run(self.scorer.predict_proba, pairs) if pairs else np.zeros((0, 3))
        out: list[Judgement] = []
        offset = 0
        for item in items:
            rows = probs[offset:offset + len(item.evidence)]
            offset += len(item.evidence)
            label_probs, ordered = aggregate_evidence(rows, item.evidence)
            out.append(Judgement(label_probs.verdict(), label_probs, Tier.EMBEDDED, evidence=ordered))
        return out

    async def ready(self) -> bool:
        return True


def error_judgement(reason: str, tier: Tier) -> Judgement:
    return Judgement(Verdict.ERROR, None, tier, error=reason)
