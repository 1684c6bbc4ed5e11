"""Review 6: a pair scorer row that is not a probability distribution up to scale gives that claim ERROR."""

from __future__ import annotations

import numpy as np
import pytest

from server.backends.judges.embedded import EmbeddedJudge
from server.pipeline.deadline import Deadline
from server.pipeline.runtime import Blocking
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Tier, Verdict


def ev(text: str) -> Evidence:
    return Evidence(text[:12], text, "src", "", 0.5, EvidenceOrigin.CONTEXT)


class RowScorer:
    """Supported for every pair, except claims holding "broken", which get `row`."""

    name = "row-scorer"

    def __init__(self, row):
        self.row = row

    def predict_proba(self, pairs):
        return np.array([self.row if "broken" in claim else (0.9, 0.05, 0.05) for _, claim in pairs])


@pytest.mark.parametrize("row", [(0.0, 0.0, 0.0), (1e308, 1e308, 0.0)], ids=["zeros", "sum-overflows"])
async def test_a_row_with_no_finite_positive_sum_is_that_claim_s_error_not_a_crash_or_a_made_up_verdict(row):
    """A row of zeros raised ValueError out of the judge (the whole request failed INTERNAL); a row whose sum
    overflowed normalised to (0, 0, 0) and came back `supported` with probabilities summing to 0."""
    judge = EmbeddedJudge(RowScorer(row), Blocking(None))
    out = await judge.judge([JudgeItem("The broken claim.", (ev("Some passage."),)),
                             JudgeItem("Lithium is renally cleared.", (ev("Lithium is cleared by the kidneys."),))],
                            Deadline())
    assert out[0].verdict is Verdict.ERROR and out[0].probabilities is None and out[0].tier is Tier.EMBEDDED
    assert "invalid probabilities" in out[0].error
    assert out[1].verdict is Verdict.SUPPORTED
    p = out[1].probabilities
    assert p.supported + p.contradicted + p.not_enough_info == pytest.approx(1.0)


async def test_rows_that_only_need_rescaling_are_still_read():
    judge = EmbeddedJudge(RowScorer((2.0, 6.0, 2.0)), Blocking(None))
    [out] = await judge.judge([JudgeItem("The broken claim.", (ev("Some passage."),))], Deadline())
    assert out.verdict is Verdict.CONTRADICTED and out.probabilities.contradicted == pytest.approx(0.6)
