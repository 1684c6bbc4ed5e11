"""Review 6: the `rank` conflict rule breaks a tie in rank by the premises at that rank only."""

from __future__ import annotations

import numpy as np
import pytest

from server.backends.judges.aggregation import AggregationPolicy, Unit, aggregate
from server.pipeline.types import Evidence, EvidenceOrigin, Verdict

WEAK_S, C = (0.55, 0.40, 0.05), (0.35, 0.60, 0.05)
N, STRONG_S = (0.05, 0.05, 0.90), (0.99, 0.005, 0.005)


def ev(fact_id: str) -> Evidence:
    return Evidence(fact_id, f"text of {fact_id}", "src", "", 0.5, EvidenceOrigin.KNOWLEDGE_BASE)


def test_a_tie_between_two_windows_of_the_top_passage_is_not_decided_by_a_worse_ranked_fact():
    """The top passage has a window that supports (0.55) and one that contradicts (0.60): the stronger of the two
    decides. A fact ranked third supporting at 0.99 loses to that contradiction on its own, so it must not turn the
    tie into support (it did: the tie compared the strongest support anywhere with the contradiction)."""
    evidence = [ev("passage"), ev("b"), ev("c")]
    units = [Unit("window 1", (0,)), Unit("window 2", (0,)), Unit("b", (1,))]
    probs, verdict, ordered = aggregate(np.array([WEAK_S, C, N]), units, evidence)
    assert verdict is Verdict.CONTRADICTED  # the tie at rank 0, without the third fact
    probs, verdict, ordered = aggregate(np.array([WEAK_S, C, N, STRONG_S]), [*units, Unit("c", (2,))], evidence)
    assert verdict is Verdict.CONTRADICTED
    assert probs.contradicted == pytest.approx(0.60) and ordered[0] is evidence[0]
    _, alone, _ = aggregate(np.array([N, C, N, STRONG_S]), [*units, Unit("c", (2,))], evidence)
    assert alone is Verdict.CONTRADICTED  # the third fact against the contradiction alone: rank decides


def test_facts_read_together_tie_with_their_last_fact_on_their_own_strength():
    evidence = [ev("a"), ev("b"), ev("c")]
    units = [Unit("a", (0,)), Unit("b", (1,)), Unit("c", (2,)), Unit("a b", (0, 1), joint=True)]
    _, verdict, ordered = aggregate(np.array([N, C, STRONG_S, WEAK_S]), units, evidence)
    assert verdict is Verdict.CONTRADICTED and ordered[0] is evidence[1]
    # the joint premise stronger than the contradiction at its rank still supports
    _, verdict, _ = aggregate(np.array([N, C, N, STRONG_S]), units, evidence)
    assert verdict is Verdict.SUPPORTED


def test_the_stronger_rule_still_compares_the_strongest_premises():
    evidence = [ev("passage"), ev("b"), ev("c")]
    units = [Unit("window 1", (0,)), Unit("window 2", (0,)), Unit("b", (1,)), Unit("c", (2,))]
    _, verdict, ordered = aggregate(np.array([WEAK_S, C, N, STRONG_S]), units, evidence,
                                    AggregationPolicy(conflict="stronger"))
    assert verdict is Verdict.SUPPORTED and ordered[0] is evidence[2]
