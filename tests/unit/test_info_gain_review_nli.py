"""InfoGain review: an answer too long for the nli estimator's pair scorer gives null gains, never gains of 0."""

from __future__ import annotations

import numpy as np
import pytest

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR
from server.backends.lm.nli_estimator import NliEstimator
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.info_gain import score_info_gain
from server.pipeline.runtime import Blocking
from server.pipeline.types import ChainStatus
from tests.unit.test_info_gain import make_deps, request

STEPS = ["Inferior infarctions often involve the right ventricle.", "Nitroglycerin reduces preload.",
         "Intravenous fluids restore preload."]
LONG_ANSWER = "Intravenous fluids, because " + "the right ventricle depends on preload and " * 25  # ~260 tokens


class WordScorer:
    """A pair scorer reading 40 words: P(supported) grows with the premise's words."""

    name = "words"

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def premise_budget(self, hypothesis):
        return max(40 - len(hypothesis.split()), 0)

    def predict_proba(self, pairs):
        p = [min(0.9, 0.1 + 0.02 * len(premise.split())) for premise, _ in pairs]
        return np.array([[x, (1 - x) / 2, (1 - x) / 2] for x in p])


async def check(scorer):
    estimator = NliEstimator(scorer, Blocking(None))
    result = await score_info_gain(request(STEPS, answer=LONG_ANSWER), make_deps(estimator), NO_DEADLINE)
    assert result.estimator == "nli"
    # Every c_i was cut to nothing: equal L_i, so gains of exactly 0.0 and info_gain 0.0 with status ok.
    assert [s.gain for s in result.steps] == [None] * 3 and result.info_gain is None
    assert result.status == ChainStatus.PARTIAL
    assert all("too long for the nli estimator" in s.null_reason for s in result.steps)
    assert all("context_overflow" not in s.flags for s in result.steps)
    windowed = await score_info_gain(request(STEPS, answer=LONG_ANSWER, window=1), make_deps(estimator), NO_DEADLINE)
    assert [s.gain for s in windowed.steps] == [None] * 3
    short = await score_info_gain(request(STEPS, answer="Intravenous fluids"), make_deps(estimator), NO_DEADLINE)
    assert all(s.gain is not None for s in short.steps) and short.status == ChainStatus.OK


async def test_an_answer_that_fills_the_scorers_input_nulls_the_gains():
    await check(WordScorer())


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="the NLI judge is not exported")
async def test_with_the_judge_a_long_answer_nulls_the_gains():
    from server.backends.judges.nli_model import NliModel

    await check(NliModel.load(quantize=False))
