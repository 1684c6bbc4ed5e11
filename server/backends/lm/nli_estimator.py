"""The `nli` InfoGain estimator: L_i = -log P(supported) of "The answer is A." given c_i.

A proxy for when no causal LM is configured: it uses the embedded judge's
pair scorer, keeps the question and the latest steps that fit (left
truncation), and has no paper mode.
"""

from __future__ import annotations

import math
from typing import Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.errors import InvalidArgumentError
from ...pipeline.runtime import Blocking
from ...pipeline.types import PrefixScores

_FLOOR = 1e-9


def truncated_context(context0: str, steps: Sequence[str], max_chars: int) -> tuple[str, bool]:
    """c_i with the question kept and the oldest steps dropped to fit max_chars."""
    kept: list[str] = []
    budget = max_chars - len(context0)
    for step in reversed(steps):
        if len(step) + 1 > budget:
            break
        kept.append(step)
        budget -= len(step) + 1
    truncated = len(kept) < len(steps)
    question = context0 if len(context0) <= max_chars else context0[:max_chars]
    return "\n".join([question, *reversed(kept)]), truncated or len(context0) > max_chars


class NliEstimator:
    kind = "nli"

    def __init__(self, scorer, blocking: Blocking, max_chars: int = 1500, batcher=None):
        self.scorer = scorer
        self.name = f"nli:{scorer.name}"
        self._blocking = blocking
        self.max_chars = max_chars
        self._batcher = batcher  # server.batching.MicroBatcher of the scorer (shared with the judge); None = direct

    async def score_prefixes(self, context0: str, steps: Sequence[str], target: str, deadline: Deadline) -> PrefixScores:
        hypothesis = f"The answer is {target.strip()}."
        contexts = [truncated_context(context0, steps[:i], self.max_chars) for i in range(len(steps) + 1)]
        pairs = [(c, hypothesis) for c, _ in contexts]
        if self._batcher is not None:
            probs = await self._batcher.submit(pairs, deadline)
        else:
            probs = await self._blocking.run(self.scorer.predict_proba, pairs)
        nll = tuple(-math.log(max(float(p[0]), _FLOOR)) for p in probs)
        return PrefixScores(nll=nll, answer_tokens=0, truncated=tuple(t for _, t in contexts))

    async def paper_perplexities(self, context0, steps, target, deadline) -> list[float | None]:
        raise InvalidArgumentError.single("options.mode", "paper mode needs a causal LM; the nli estimator has none")

    async def ready(self) -> bool:
        return True
