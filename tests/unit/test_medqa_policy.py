"""The medical QA example's decisions on a verification result, in both fail modes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from examples.medqa.policy import decide_on_failure, decide_on_score


def score(status="ok", ki=1.0, verdicts=("supported",)):
    steps = [SimpleNamespace(index=i, start=10 * i, end=10 * i + 9, verdict=v) for i, v in enumerate(verdicts)]
    return SimpleNamespace(steps=steps, status=status, knowledge_index=ki, coverage=1.0, first_error_step=None,
                           provenance={"kb_id": "kb", "judge": "j"})


@pytest.mark.parametrize("fail_mode", ["closed", "open"])
def test_content_policy_is_the_same_in_both_modes(fail_mode):
    assert decide_on_score(score(), 0.5, fail_mode).status == "verified"
    flagged = decide_on_score(score(ki=0.2), 0.5, fail_mode)
    assert (flagged.http_status, flagged.status, flagged.release) == (200, "flagged", True)
    withheld = decide_on_score(score(verdicts=("supported", "contradicted")), 0.5, fail_mode)
    assert (withheld.http_status, withheld.status, withheld.release) == (200, "withheld", False)
    assert withheld.verification["contradicted_steps"] == [{"step": 1, "start": 10, "end": 19}]


def test_a_partially_judged_chain_is_not_released_when_failing_closed():
    closed = decide_on_score(score(status="partial", verdicts=("supported", "error")), 0.5, "closed")
    assert (closed.http_status, closed.status, closed.release) == (503, "unverified", False)
    assert closed.verification["reason"] == "PARTIAL" and closed.verification["knowledge_index"] == 1.0
    assert (closed.http_status, closed.release) == (decide_on_failure("PARTIAL", "closed").http_status, False)


def test_a_partially_judged_chain_is_released_marked_when_failing_open():
    opened = decide_on_score(score(status="partial", verdicts=("supported", "error")), 0.5, "open")
    assert (opened.http_status, opened.status, opened.release) == (200, "unverified", True)
    assert opened.verification["reason"] == "PARTIAL"
