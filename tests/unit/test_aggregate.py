"""Step verdicts and chain scores exactly as ARCHITECTURE.md defines them."""

import pytest

from server.pipeline.aggregate import chain_scores, step_result
from server.pipeline.types import Claim, ClaimResult, LabelProbs, Step, Tier, Verdict

S, C, N, NK, E = Verdict.SUPPORTED, Verdict.CONTRADICTED, Verdict.NOT_ENOUGH_INFO, Verdict.NO_KNOWLEDGE, Verdict.ERROR
PROBS = {S: LabelProbs(0.8, 0.1, 0.1), C: LabelProbs(0.1, 0.8, 0.1), N: LabelProbs(0.2, 0.1, 0.7)}


def _claim(verdict, probs=None, index=0):
    claim = Claim(f"claim {index}", 0, 7, verdict is NK)
    if verdict in (NK, E):
        return ClaimResult(claim, verdict, None, Tier.NONE if verdict is NK else Tier.EMBEDDED, error="x")
    return ClaimResult(claim, verdict, probs or PROBS[verdict], Tier.EMBEDDED)


def _step(*verdicts, index=0):
    claims = [_claim(v, index=i) for i, v in enumerate(verdicts)]
    return step_result(Step(index, "text", 0, 4, tuple(c.claim for c in claims)), claims)


@pytest.mark.parametrize("verdicts, expected", [
    ((), NK), ((NK,), NK), ((NK, NK), NK),
    ((S, C), C), ((C, E), C), ((E, S), E), ((S, S), S), ((S, NK), S), ((S, N), N), ((N, N), N), ((NK, N), N),
])
def test_step_verdict_order(verdicts, expected):
    assert _step(*verdicts).verdict is expected


def test_a_not_enough_info_step_shows_a_not_enough_info_claim_even_beside_a_less_supported_claim():
    """A supported claim judged by the LLM at P(supported) 0.40 beside an undecided one at 0.45: the step, not enough
    info, showed the supported claim's probabilities, tier and evidence."""
    unsure_yes = ClaimResult(Claim("a", 0, 1), S, LabelProbs(0.40, 0.35, 0.25), Tier.LLM)
    undecided = ClaimResult(Claim("b", 2, 3), N, LabelProbs(0.45, 0.05, 0.50), Tier.EMBEDDED)
    result = step_result(Step(0, "a b", 0, 3, (unsure_yes.claim, undecided.claim)), [unsure_yes, undecided])
    assert result.verdict is N and result.probabilities == undecided.probabilities and result.tier is Tier.EMBEDDED


def test_step_probabilities_come_from_the_deciding_claim():
    weak = LabelProbs(0.55, 0.05, 0.40)
    claims = [ClaimResult(Claim("a", 0, 1), S, PROBS[S], Tier.EMBEDDED),
              ClaimResult(Claim("b", 2, 3), S, weak, Tier.LLM)]
    result = step_result(Step(0, "a b", 0, 3, tuple(c.claim for c in claims)), claims)
    assert result.probabilities == weak and result.tier is Tier.LLM  # least supported claim
    strong = LabelProbs(0.0, 0.95, 0.05)
    claims = [ClaimResult(Claim("a", 0, 1), C, PROBS[C], Tier.EMBEDDED),
              ClaimResult(Claim("b", 2, 3), C, strong, Tier.EMBEDDED)]
    assert step_result(Step(0, "a b", 0, 3, tuple(c.claim for c in claims)), claims).probabilities == strong
    assert _step(NK).probabilities is None and _step(E).probabilities is None


def test_chain_scores():
    steps = [_step(S, index=0), _step(NK, index=1), _step(C, index=2), _step(N, index=3), _step(E, index=4),
             _step(C, index=5)]
    scores = chain_scores(steps)
    assert scores["knowledge_index"] == pytest.approx(1 / 4)
    assert scores["knowledge_index_paper"] == pytest.approx(2 / 5)
    assert scores["coverage"] == pytest.approx(3 / 4)
    assert scores["first_error_step"] == 2
    assert scores["error_steps"] == 1 and scores["status"].value == "partial"
    counts = scores["counts"]
    assert (counts.supported, counts.contradicted, counts.not_enough_info, counts.no_knowledge, counts.error) == (
        1, 2, 1, 1, 1)


def test_undefined_scores_are_none_not_nan():
    scores = chain_scores([_step(NK, index=0), _step(NK, index=1)])
    assert scores["knowledge_index"] is None and scores["coverage"] is None
    assert scores["knowledge_index_paper"] == 1.0 and scores["first_error_step"] == -1
    assert scores["status"].value == "ok"
    only_errors = chain_scores([_step(E, index=0)])
    assert only_errors["knowledge_index_paper"] is None and only_errors["knowledge_index"] is None
