"""InfoGain review 8: with a window, a step's `truncated` flag says whether the context its gain was measured on
(the window's) lost text, not whether the full prefix did."""

from __future__ import annotations

from server.backends.lm.nli_estimator import NliEstimator
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.info_gain import score_info_gain
from server.pipeline.runtime import Blocking
from tests.unit.test_info_gain import make_deps, request
from tests.unit.test_info_gain_review_nli import WordScorer

EIGHT = "one two three four five six seven eight"


async def test_a_windowed_gain_is_flagged_truncated_only_when_its_window_lost_text():
    """The pair scorer reads 40 words (37 beside "The answer is insulin."): the full prefixes of steps 5 and 6
    lose their oldest steps, but each window (the question and two steps, 17 words) fits whole. Those gains were
    flagged truncated, read from the full prefix that no windowed gain uses."""
    estimator = NliEstimator(WordScorer(), Blocking(None))
    steps = [EIGHT] * 6
    full = await score_info_gain(request(steps), make_deps(estimator), NO_DEADLINE)
    assert ["truncated" in s.flags for s in full.steps] == [False] * 4 + [True] * 2
    windowed = await score_info_gain(request(steps, window=1), make_deps(estimator), NO_DEADLINE)
    assert ["windowed" in s.flags for s in windowed.steps] == [False] * 2 + [True] * 4
    assert not any("truncated" in s.flags for s in windowed.steps)


async def test_a_window_that_loses_text_is_flagged():
    estimator = NliEstimator(WordScorer(), Blocking(None))
    steps = [EIGHT, EIGHT, EIGHT, " ".join([EIGHT] * 4)]  # the last window: 2 + 8 + 32 words > 37
    windowed = await score_info_gain(request(steps, window=1), make_deps(estimator), NO_DEADLINE)
    assert ["truncated" in s.flags for s in windowed.steps] == [False, False, False, True]
    assert "windowed" in windowed.steps[3].flags
