"""Evidence aggregation of the embedded judge: sentence windows, support and contradiction rules."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.backends.judges.aggregation import AggregationPolicy, Unit, aggregate, units_for, windows
from server.backends.judges.embedded import EmbeddedJudge
from server.pipeline.deadline import Deadline
from server.pipeline.runtime import Blocking
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, LabelProbs, Tier, Verdict

S, C, N = (0.9, 0.05, 0.05), (0.05, 0.9, 0.05), (0.05, 0.05, 0.9)


def ev(text: str, fact_id: str | None = None) -> Evidence:
    return Evidence(fact_id or text[:12], text, "src", "", 0.5, EvidenceOrigin.KNOWLEDGE_BASE)


def singles(n: int) -> list[Unit]:
    return [Unit(f"fact {k}", (k,)) for k in range(n)]


def test_one_supporting_fact_among_unrelated_ones_supports():
    evidence = [ev("a"), ev("b"), ev("c")]
    probs, verdict, ordered = aggregate(np.array([N, S, N]), singles(3), evidence)
    assert verdict is Verdict.SUPPORTED and probs.supported == pytest.approx(0.9)
    assert ordered[0] is evidence[1] and set(ordered) == set(evidence)


def test_one_contradicting_fact_contradicts():
    evidence = [ev("a"), ev("b")]
    probs, verdict, ordered = aggregate(np.array([N, C]), singles(2), evidence)
    assert verdict is Verdict.CONTRADICTED and probs.contradicted == pytest.approx(0.9)
    assert ordered[0] is evidence[1]


def test_support_against_contradiction_the_better_retrieved_fact_decides():
    evidence = [ev("a"), ev("b"), ev("c")]
    # a negated claim reads as contradicted by facts on a neighbouring subject; the top fact is about it
    rows = np.array([(0.73, 0.26, 0.01), (0.01, 0.88, 0.11), (0.02, 0.95, 0.03)])
    probs, verdict, ordered = aggregate(rows, singles(3), evidence)
    assert verdict is Verdict.SUPPORTED and probs.supported == pytest.approx(0.73) and ordered[0] is evidence[0]
    rows = np.array([(0.34, 0.54, 0.12), (0.66, 0.28, 0.06), (0.9, 0.05, 0.05)])
    probs, verdict, ordered = aggregate(rows, singles(3), evidence)
    assert verdict is Verdict.CONTRADICTED and ordered[0] is evidence[0]


def test_within_one_label_the_strongest_premise_gives_the_probabilities():
    evidence = [ev("a"), ev("b")]
    probs, verdict, ordered = aggregate(np.array([(0.5, 0.2, 0.3), (0.95, 0.03, 0.02)]), singles(2), evidence)
    assert verdict is Verdict.SUPPORTED and probs.supported == pytest.approx(0.95) and ordered[0] is evidence[1]


def test_a_joint_premise_ranks_as_its_last_fact():
    evidence = [ev("a"), ev("b")]
    units = [*singles(2), Unit("a b", (0, 1), joint=True)]
    _, verdict, _ = aggregate(np.array([N, C, S]), units, evidence)  # C at rank 1 against S at rank 1
    assert verdict is Verdict.SUPPORTED  # a tie in rank: the stronger (0.9 vs 0.9, support first)


def test_stronger_conflict_rule():
    evidence = [ev("a"), ev("b")]
    policy = AggregationPolicy(conflict="stronger")
    rows = np.array([(0.6, 0.3, 0.1), (0.02, 0.95, 0.03)])
    _, verdict, ordered = aggregate(rows, singles(2), evidence, policy)
    assert verdict is Verdict.CONTRADICTED and ordered[0] is evidence[1]
    _, verdict, _ = aggregate(rows, singles(2), evidence)
    assert verdict is Verdict.SUPPORTED
    with pytest.raises(ValueError):
        AggregationPolicy(conflict="vote")


def test_not_settled_reports_the_fact_closest_to_settling():
    evidence = [ev("a"), ev("b"), ev("c")]
    rows = np.array([(0.1, 0.1, 0.8), (0.3, 0.1, 0.6), (0.05, 0.05, 0.9)])
    probs, verdict, ordered = aggregate(rows, singles(3), evidence)
    assert verdict is Verdict.NOT_ENOUGH_INFO and probs.not_enough_info == pytest.approx(0.6)
    assert ordered[0] is evidence[1]


def test_facts_read_together_support_but_never_contradict():
    evidence = [ev("a"), ev("b")]
    units = [*singles(2), Unit("a b", (0, 1), joint=True)]
    _, verdict, ordered = aggregate(np.array([N, N, S]), units, evidence)
    assert verdict is Verdict.SUPPORTED and ordered[:2] == tuple(evidence)
    probs, verdict, _ = aggregate(np.array([N, N, C]), units, evidence)
    assert verdict is Verdict.NOT_ENOUGH_INFO and probs.not_enough_info == pytest.approx(0.9)


def test_no_evidence_is_not_enough_info():
    probs, verdict, ordered = aggregate(np.zeros((0, 3)), [], [])
    assert verdict is Verdict.NOT_ENOUGH_INFO and probs.not_enough_info == 1.0 and ordered == ()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0.001, 1.0)] * 3), min_size=1, max_size=6), st.booleans(),
       st.sampled_from(["rank", "stronger"]))
def test_the_verdict_is_always_the_top_label_of_the_probabilities_reported(rows, with_joint, conflict):
    n = len(rows)
    units = singles(n) + ([Unit("joint", tuple(range(n)), joint=True)] if with_joint else [])
    probs = np.array(rows + ([rows[0][::-1]] if with_joint else []))
    policy = AggregationPolicy(conflict=conflict)
    label_probs, verdict, ordered = aggregate(probs, units, [ev(str(k)) for k in range(n)], policy)
    assert label_probs.verdict() is verdict
    assert abs(label_probs.supported + label_probs.contradicted + label_probs.not_enough_info - 1) < 1e-9
    assert len(ordered) == n


def test_below_min_decisive_a_premise_settles_nothing():
    evidence = [ev("a"), ev("b"), ev("c")]
    weak_c = (0.35, 0.45, 0.20)  # an unrelated fact tipping to contradiction by chance
    _, verdict, _ = aggregate(np.array([N, weak_c, N]), singles(3), evidence)
    assert verdict is Verdict.CONTRADICTED  # the default floor (0) takes any top label
    probs, verdict, _ = aggregate(np.array([N, weak_c, N]), singles(3), evidence, AggregationPolicy(min_decisive=0.5))
    assert verdict is Verdict.NOT_ENOUGH_INFO and probs.not_enough_info == pytest.approx(0.20)
    # a sub-floor contradiction better retrieved than a decisive support no longer overrules it
    _, verdict, ordered = aggregate(np.array([weak_c, S, N]), singles(3), evidence, AggregationPolicy(min_decisive=0.5))
    assert verdict is Verdict.SUPPORTED and ordered[0] is evidence[1]
    assert "min_decisive=0.5" in AggregationPolicy(min_decisive=0.5).version()
    assert "min_decisive" not in AggregationPolicy().version()  # the default keeps its cache keys
    with pytest.raises(ValueError):
        AggregationPolicy(min_decisive=1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0.001, 1.0)] * 3), min_size=1, max_size=6), st.floats(0.0, 0.9))
def test_a_settled_verdict_is_the_top_label_with_at_least_the_floor(rows, floor):
    n = len(rows)
    label_probs, verdict, _ = aggregate(np.array(rows), singles(n), [ev(str(k)) for k in range(n)],
                                        AggregationPolicy(min_decisive=floor))
    if verdict is not Verdict.NOT_ENOUGH_INFO:
        assert label_probs.verdict() is verdict and getattr(label_probs, verdict.value) >= floor


SENTENCES = [f"Sentence number {k} talks about drug {k} and its effect on the liver." for k in range(40)]


def test_short_evidence_is_one_window():
    assert windows("Aspirin inhibits COX.", AggregationPolicy()) == ["Aspirin inhibits COX."]
    assert windows("   ", AggregationPolicy()) == []


def test_long_evidence_is_cut_into_overlapping_sentence_windows():
    policy = AggregationPolicy(window_chars=300, window_overlap=1, max_windows=100)
    text = " ".join(SENTENCES)
    parts = windows(text, policy)
    assert len(parts) > 1 and all(len(p) <= 300 for p in parts)
    for sentence in SENTENCES:  # nothing is lost
        assert any(sentence in p for p in parts)
    for a, b in zip(parts, parts[1:]):  # consecutive windows share their boundary sentence
        assert a.split(". ")[-1].rstrip(".") in b


def test_windows_are_capped_per_evidence():
    policy = AggregationPolicy(window_chars=200, max_windows=3)
    assert len(windows(" ".join(SENTENCES), policy)) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="abcdefgh ", min_size=1, max_size=120), min_size=1, max_size=30),
       st.integers(100, 400))
def test_windows_fit_and_cover_every_word(parts, limit):
    text = ". ".join(p.strip() or "x" for p in parts) + "."
    policy = AggregationPolicy(window_chars=limit, max_windows=10_000)
    out = windows(text, policy)
    assert all(len(w) <= limit for w in out)
    assert set(text.replace(".", " ").split()) <= set(" ".join(out).replace(".", " ").split())


def test_joint_unit_only_when_it_fits_in_one_window():
    policy = AggregationPolicy(window_chars=100, joint_support=2)
    short = units_for([ev("Drug A is cleared by the kidneys."), ev("Drug A is toxic.")], policy)
    assert [u.joint for u in short] == [False, False, True] and short[-1].evidence == (0, 1)
    long = units_for([ev("x" * 60), ev("y" * 60)], policy)
    assert not any(u.joint for u in long)
    assert not any(u.joint for u in units_for([ev("a b")], policy))


class FakePairScorer:
    """Supported when the premise contains the claim, contradicted when it contains 'not ' + claim."""

    name = "fake-pair-scorer"

    def __init__(self):
        self.calls: list[list[tuple[str, str]]] = []

    def predict_proba(self, pairs):
        self.calls.append(list(pairs))
        out = []
        for premise, claim in pairs:
            key = claim.rstrip(".").lower()
            if f"not {key}" in premise.lower():
                out.append(C)
            elif key in premise.lower():
                out.append(S)
            else:
                out.append(N)
        return np.array(out)


async def test_embedded_judge_reads_the_end_of_long_passages():
    scorer = FakePairScorer()
    judge = EmbeddedJudge(scorer, Blocking(None), AggregationPolicy(window_chars=300))
    passage = " ".join(SENTENCES[:20]) + " Lithium is cleared by the kidneys."
    items = [JudgeItem("Lithium is cleared by the kidneys.", (ev(passage, "p1"),)),
             JudgeItem("Metformin is a biguanide.", (ev("It is not metformin is a biguanide", "p2"), ev(passage, "p1"))),
             JudgeItem("Nothing to see.", ())]
    out = await judge.judge(items, Deadline())
    assert [j.verdict for j in out] == [Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.NOT_ENOUGH_INFO]
    assert [j.tier for j in out] == [Tier.EMBEDDED, Tier.EMBEDDED, Tier.NONE]  # no evidence: not judged
    assert out[1].evidence[0].fact_id == "p2"
    assert len(scorer.calls) == 1  # one batched call for every claim
    pairs = scorer.calls[0]
    assert len(pairs) == len(set(pairs)) and all(len(p) <= 300 for p, _ in pairs)
    assert judge.prompt_version.startswith("evidence-agg/")


async def test_embedded_judge_rejects_a_scorer_returning_the_wrong_shape():
    class Broken(FakePairScorer):
        def predict_proba(self, pairs):
            return np.zeros((len(pairs) + 1, 3))

    judge = EmbeddedJudge(Broken(), Blocking(None))
    with pytest.raises(ValueError, match="shape"):
        await judge.judge([JudgeItem("x", (ev("y"),))], Deadline())


async def test_a_scorer_returning_nan_gives_that_claim_an_error_verdict_not_a_score():
    """max(0.0, nan) is 0.0: a NaN row used to be read as a zero and (nan, 0.3, 0.2) came out contradicted."""
    class Nan(FakePairScorer):
        def predict_proba(self, pairs):
            rows = super().predict_proba(pairs)
            rows[[i for i, (_, claim) in enumerate(pairs) if "broken" in claim]] = [np.nan, 0.3, 0.2]
            return rows

    judge = EmbeddedJudge(Nan(), Blocking(None))
    out = await judge.judge([JudgeItem("The broken claim.", (ev("The broken claim."),)),
                             JudgeItem("Lithium is cleared by the kidneys.",
                                       (ev("Lithium is cleared by the kidneys."),))], Deadline())
    assert out[0].verdict is Verdict.ERROR and out[0].probabilities is None and "NaN" in out[0].error
    assert out[1].verdict is Verdict.SUPPORTED
    with pytest.raises(ValueError, match="finite"):
        LabelProbs.from_row([np.nan, 0.3, 0.2])


async def test_the_server_built_embedded_judge_reads_a_passage_of_the_longest_allowed_length_to_its_end():
    """Sentences of 300 and 450 characters never share a 700-character window: a 10,000-character passage of them
    is 27 windows, and a judge reading 16 never saw a fact stated at its end."""
    from server.backends.registry import BackendContext, _embedded
    from server.config import Settings

    settings = Settings()
    fact = "Lithium is cleared by the kidneys."
    sentences, size, i = [], len(fact), 0
    while True:
        sentence = (f"Filler sentence {i} " + "x" * (300 if i % 2 else 450))[:(300 if i % 2 else 450) - 1] + "."
        if size + len(sentence) + 1 > settings.limits.max_passage_chars:
            break
        sentences.append(sentence)
        size += len(sentence) + 1
        i += 1
    passage = " ".join(sentences) + " " + fact
    assert len(passage) <= settings.limits.max_passage_chars
    scorer = FakePairScorer()
    judge = _embedded(BackendContext(settings, Blocking(None)), scorer)
    out = await judge.judge([JudgeItem(fact, (ev(passage, "p1"),))], Deadline())
    assert out[0].verdict is Verdict.SUPPORTED
