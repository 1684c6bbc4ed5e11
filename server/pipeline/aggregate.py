"""Step verdicts and chain scores, exactly as ARCHITECTURE.md defines them."""

from __future__ import annotations

from typing import Sequence

from .types import JUDGED, ChainStatus, ClaimResult, Step, StepResult, Tier, Verdict, VerdictCounts


def step_result(step: Step, claims: Sequence[ClaimResult]) -> StepResult:
    """Decides a step's verdict from its claims (order: no knowledge, contradicted, error, supported, NEI)."""
    knowledge = [c for c in claims if c.verdict is not Verdict.NO_KNOWLEDGE]
    if not knowledge:
        return StepResult(step, Verdict.NO_KNOWLEDGE, None, Tier.NONE, (), tuple(claims))
    contradicted = [c for c in knowledge if c.verdict is Verdict.CONTRADICTED]
    if contradicted:
        decider = max(contradicted, key=lambda c: c.probabilities.contradicted if c.probabilities else 0.0)
        return _decided(step, Verdict.CONTRADICTED, decider, claims)
    errors = [c for c in knowledge if c.verdict is Verdict.ERROR]
    if errors:
        return StepResult(step, Verdict.ERROR, None, errors[0].tier, errors[0].evidence, tuple(claims))
    verdict = Verdict.SUPPORTED if all(c.verdict is Verdict.SUPPORTED for c in knowledge) else Verdict.NOT_ENOUGH_INFO
    # The least supported of the claims that decided it: for NOT_ENOUGH_INFO, of the not_enough_info claims (a
    # supported claim can be less sure of "supported" than one left undecided, whose probabilities, tier and
    # evidence the step then showed under a verdict they did not give)
    deciders = knowledge if verdict is Verdict.SUPPORTED else [c for c in knowledge if c.verdict is verdict]
    decider = min(deciders, key=lambda c: c.probabilities.supported if c.probabilities else 0.0)
    return _decided(step, verdict, decider, claims)


def _decided(step: Step, verdict: Verdict, decider: ClaimResult, claims: Sequence[ClaimResult]) -> StepResult:
    return StepResult(step, verdict, decider.probabilities, decider.tier, decider.evidence, tuple(claims))


def _ratio(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def chain_scores(steps: Sequence[StepResult]) -> dict:
    """knowledge_index, knowledge_index_paper, coverage, counts, error_steps, first_error_step, status."""
    tally = {v: 0 for v in Verdict}
    for s in steps:
        tally[s.verdict] += 1
    sup, con, nei = (tally[v] for v in JUDGED)
    nok, err = tally[Verdict.NO_KNOWLEDGE], tally[Verdict.ERROR]
    first_error = next((s.step.index for s in steps if s.verdict is Verdict.CONTRADICTED), -1)
    return {
        "knowledge_index": _ratio(sup, sup + con + nei),
        "knowledge_index_paper": _ratio(sup + nok, len(steps) - err),
        "coverage": _ratio(sup + con, sup + con + nei),
        "counts": VerdictCounts(sup, con, nei, nok, err),
        "error_steps": err,
        "first_error_step": first_error,
        "status": ChainStatus.PARTIAL if err else ChainStatus.OK,
    }
