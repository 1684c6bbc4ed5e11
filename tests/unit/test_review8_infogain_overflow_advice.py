"""InfoGain review 8: the reason of a gain nulled by an overflow gives the advice that fits the request: a window
when it has none, a smaller window when it has one (it said "try the window option" to requests with a window)."""

from __future__ import annotations

from server.backends.lm.causal_lm import LmEstimator
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.info_gain import score_info_gain
from tests.helpers.char_lm import CharLm
from tests.unit.test_info_gain import make_deps, request

# One token per character: "Q?" + " Answer:" + " x" is 13 tokens, each 10-character step adds 11.
STEPS = ["a" * 10, "b" * 10, "c" * 10, "d" * 10, "e" * 40]


async def test_without_a_window_the_advice_is_a_window():
    result = await score_info_gain(request(STEPS, answer="x"), make_deps(LmEstimator(CharLm(), 50)), NO_DEADLINE)
    null = [s for s in result.steps if s.gain is None]
    assert [s.step.index for s in null] == [3, 4] and all("context_overflow" in s.flags for s in null)
    assert all("try the window option" in s.null_reason for s in null)


async def test_with_window_1_no_smaller_window_is_advised():
    """Window 1: step 4's window (steps 3 and 4) fits, step 5's (steps 4 and 5: 13 + 11 + 41 tokens) does not,
    and no smaller window exists (it advised one)."""
    result = await score_info_gain(request(STEPS, answer="x", window=1), make_deps(LmEstimator(CharLm(), 50)),
                                   NO_DEADLINE)
    assert [s.gain is None for s in result.steps] == [False, False, False, False, True]
    last = result.steps[4]
    assert "context_overflow" in last.flags and "windowed" in last.flags
    assert "context is 50 tokens" in last.null_reason and "longer context" in last.null_reason
    assert "smaller window" not in last.null_reason and "try the window option" not in last.null_reason


async def test_with_a_wider_window_the_advice_is_a_smaller_window():
    """Window 2: step 4's window (steps 2 to 4: 13 + 33 tokens) fits a 46-token context, step 5's does not."""
    result = await score_info_gain(request(STEPS, answer="x", window=2), make_deps(LmEstimator(CharLm(), 46)),
                                   NO_DEADLINE)
    last = result.steps[4]
    assert last.gain is None and "windowed" in last.flags
    assert "try a smaller window" in last.null_reason and "try the window option" not in last.null_reason


async def test_each_overflow_names_the_first_prefix_that_does_not_fit():
    """Every later prefix holds the first that overflows: the reason names that one as the first (it read as the
    length of each step's own prefix)."""
    result = await score_info_gain(request(STEPS, answer="x"), make_deps(LmEstimator(CharLm(), 50)), NO_DEADLINE)
    reasons = {s.null_reason for s in result.steps if s.gain is None}
    assert len(reasons) == 1 and "the first prefix that does not fit is 56 tokens" in reasons.pop()
