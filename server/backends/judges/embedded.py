"""The embedded judge: a pair scorer over each claim's evidence windows, aggregated per claim."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...pipeline.deadline import Deadline
from ...pipeline.runtime import Blocking
from ...pipeline.types import JudgeItem, Judgement, Tier, Verdict
from .aggregation import AggregationPolicy, Unit, aggregate, split_to_fit, units_for

MIN_PREMISE_TOKENS = 32  # below this room for a premise, windows are not refitted


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

    def _units(self, items: Sequence[JudgeItem]) -> list[list[Unit]]:
        cut: dict[str, list[str]] = {}  # each evidence text is cut into windows once: claims share their context
        return self._fit([units_for(item.evidence, self.policy, cut) for item in items], items)

    def _counts_tokens(self) -> bool:
        return hasattr(self.scorer, "count_tokens") and hasattr(self.scorer, "premise_budgets")

    def _fit(self, units: list[list[Unit]], items: Sequence[JudgeItem]) -> list[list[Unit]]:
        """Every premise within the model's token budget for its claim: a window over it is cut into smaller ones
        (split_to_fit) and all of them are read, and a joint unit over it is dropped. The windows already read a
        passage of the longest allowed length to its end; capping the pieces again left the second half of a dense
        one (9,000 characters of CJK: ~40 pieces) unread. The pieces stay bounded by the passage's tokens over
        the claim's budget (at most ~3 tokens a character): ~140 for the longest allowed passage beside a short
        claim, up to ~900 beside a claim that leaves the premise 32 tokens."""
        if not self._counts_tokens():
            return units
        claims = list(dict.fromkeys(item.claim for item in items))
        budget = dict(zip(claims, self.scorer.premise_budgets(claims)))
        smallest = min(budget.values(), default=0)
        # A text of n characters is at most 3n tokens (a WordPiece token covers a character at least, and
        # normalisation at most triples one: a Hangul syllable is 2-3 jamo), so short texts are not counted.
        texts = list(dict.fromkeys(u.text for claim_units in units for u in claim_units if 3 * len(u.text) > smallest))
        tokens = dict(zip(texts, self.scorer.count_tokens(texts))) if texts else {}
        split: dict[tuple[str, int], list[str]] = {}
        out = []
        for item, claim_units in zip(items, units):
            room = budget[item.claim]
            if room < MIN_PREMISE_TOKENS:  # a claim that fills the input: pairs stay as they were (cut by the model)
                out.append(claim_units)
                continue
            fitted: list[Unit] = []
            for unit in claim_units:
                n = tokens.get(unit.text, 0)
                if n <= room:
                    fitted.append(unit)
                elif not unit.joint:  # facts are read together only when the model sees all of them
                    if (unit.text, room) not in split:
                        split[unit.text, room] = split_to_fit(unit.text, n, room, self.scorer.count_tokens)
                    fitted.extend(Unit(text, unit.evidence) for text in split[unit.text, room])
            out.append(fitted)
        return out

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        if self._counts_tokens() or any(len(e.text) > self.policy.window_chars for item in items for e in item.evidence):
            # token counts (the tokenizer is shared with the model's thread) and sentence windows of long evidence
            # (up to 50 passages of 10,000 characters per claim) would stall every other request on the event loop
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
            if not _valid_rows(rows):  # a numerical failure: never read as a verdict
                out.append(error_judgement(f"the pair scorer {self.name} returned invalid probabilities "
                                           "(NaN, infinity, negative, or a row summing to zero or overflowing) "
                                           "for this claim's evidence", Tier.EMBEDDED))
                continue
            label_probs, verdict, ordered = aggregate(rows, claim_units, item.evidence, self.policy)
            # nothing to read (no evidence, or none with text): not judged, as the LLM judge reports it too
            tier = Tier.EMBEDDED if claim_units else Tier.NONE
            out.append(Judgement(verdict, label_probs, tier, evidence=ordered))
        return out

    async def ready(self) -> bool:
        return True


def _valid_rows(rows: np.ndarray) -> bool:
    """Rows that are probabilities up to a positive, finite scale. A row of zeros has no label to read (it raised
    ValueError, failing the whole request), and one whose sum overflows to infinity normalised to (0, 0, 0) and was
    read as supported."""
    if not np.isfinite(rows).all() or (rows < 0).any():
        return False
    with np.errstate(over="ignore"):
        sums = rows.sum(axis=1)
    return bool((np.isfinite(sums) & (sums > 0)).all())


def error_judgement(reason: str, tier: Tier, llm_calls: int = 0) -> Judgement:
    """A claim the judge could not decide: ERROR with its reason, never a made-up score."""
    return Judgement(Verdict.ERROR, None, tier, error=reason, llm_calls=llm_calls)
