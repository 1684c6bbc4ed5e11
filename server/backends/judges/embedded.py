"""The embedded judge: a pair scorer over each claim's evidence windows, aggregated per claim."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...pipeline.deadline import Deadline
from ...pipeline.runtime import Blocking
from ...pipeline.types import JudgeItem, Judgement, Tier, Verdict
from .aggregation import AggregationPolicy, aggregate, units_for


class EmbeddedJudge:
    """Judges claims with a local pair scorer (the similarity baseline or the NLI model)."""

    def __init__(self, scorer, blocking: Blocking, policy: AggregationPolicy | None = None, batcher=None):
        self.scorer = scorer
        self.name = scorer.name
        self.policy = policy or AggregationPolicy()
        # An embedded judge has no prompt: its provenance names the aggregation rules instead.
        self.prompt_version = self.policy.version()
        self._blocking = blocking
        self._batcher = batcher  # server.batching.MicroBatcher of the scorer; None = call it directly

    async def _score(self, pairs: list[tuple[str, str]], deadline: Deadline) -> np.ndarray:
        """Rows for the pairs, each distinct pair scored once (claims often share evidence)."""
        distinct = list(dict.fromkeys(pairs))
        if self._batcher is not None:
            rows = np.asarray(await self._batcher.submit(distinct, deadline), dtype=np.float64)
        else:
            rows = np.asarray(await self._blocking.run(self.scorer.predict_proba, distinct), dtype=np.float64)
        if rows.shape != (len(distinct), 3):
            raise ValueError(f"pair scorer {self.name} returned shape {rows.shape} for {len(distinct)} pairs")
        index = {pair: i for i, pair in enumerate(distinct)}
        return rows[[index[pair] for pair in pairs]]

    def _units(self, items: Sequence[JudgeItem]) -> list[list]:
        cut: dict[str, list[str]] = {}  # each evidence text is cut into windows once: claims share their context
        return [units_for(item.evidence, self.policy, cut) for item in items]

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        if any(len(e.text) > self.policy.window_chars for item in items for e in item.evidence):
            # sentence windows of long evidence (up to 50 passages of 10,000 characters per claim) take long enough
            # to stall every other request on the event loop
            units = await self._blocking.run(self._units, items)
        else:
            units = self._units(items)
        pairs = [(u.text, item.claim) for item, claim_units in zip(items, units) for u in claim_units]
        probs = await self._score(pairs, deadline) if pairs else np.zeros((0, 3))
        out: list[Judgement] = []
        offset = 0
        for item, claim_units in zip(items, units):
            rows = probs[offset:offset + len(claim_units)]
            offset += len(claim_units)
            if not np.isfinite(rows).all() or (rows < 0).any():  # a numerical failure: never read as a verdict
                out.append(error_judgement(f"the pair scorer {self.name} returned invalid probabilities "
                                           "(NaN, infinity or negative) for this claim's evidence", Tier.EMBEDDED))
                continue
            label_probs, verdict, ordered = aggregate(rows, claim_units, item.evidence, self.policy)
            out.append(Judgement(verdict, label_probs, Tier.EMBEDDED, evidence=ordered))
        return out

    async def ready(self) -> bool:
        return True


def error_judgement(reason: str, tier: Tier, llm_calls: int = 0) -> Judgement:
    """A claim the judge could not decide: ERROR with its reason, never a made-up score."""
    return Judgement(Verdict.ERROR, None, tier, error=reason, llm_calls=llm_calls)
