"""InfoGain review: NaN log-probabilities from a causal LM are a numerical failure, not a zero probability."""

from __future__ import annotations

import math

from server.backends.lm.causal_lm import ZERO_PROBABILITY, LmEstimator
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.info_gain import NON_FINITE, _finite
from tests.helpers.char_lm import CharLm


class NanLm(CharLm):
    """Log-probability -1 per answer token, NaN after prefix 1, -inf after prefix 2."""

    def logprobs(self, k, scored):
        return ({1: math.nan, 2: -math.inf}.get(k, -1.0),) + (-1.0,) * (scored - 1)


async def test_nan_is_reported_as_a_numerical_failure_and_minus_inf_as_zero_probability():
    scores = _finite(await LmEstimator(NanLm()).score_prefixes("Q?", ["s1", "s2", "s3"], "ok", NO_DEADLINE))
    assert scores.nll[0] == 3.0 and scores.nll[3] == 3.0  # " ok": three tokens
    assert scores.nll[1] is None and scores.null_reasons[1] == NON_FINITE  # was "zero probability"
    assert scores.nll[2] is None and scores.null_reasons[2] == ZERO_PROBABILITY
