"""InfoGain review 8: a request the estimator cannot serve is refused before the chain is split, so an LLM
decomposer is not called for it."""

from __future__ import annotations

import dataclasses

import pytest

from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.errors import BackendNotConfiguredError, InvalidArgumentError
from server.pipeline.info_gain import score_info_gain
from server.pipeline.types import ChainInput, InfoGainOptions, InfoGainRequest
from tests.unit.test_info_gain import FakeDecomposer, FakeEstimator, make_deps


class CountingDecomposer(FakeDecomposer):
    calls = 0

    def split(self, text, question=""):
        CountingDecomposer.calls += 1
        return super().split(text, question)


def reasoning_request(**options) -> InfoGainRequest:
    return InfoGainRequest(ChainInput(question="Q?", reasoning="First, a fact.\nThen, the answer."), answer="insulin",
                           options=InfoGainOptions(splitter="llm", **options))


@pytest.mark.parametrize("options", [{"paper": True}, {"per_token": True}])
async def test_options_the_nli_estimator_cannot_serve_are_refused_before_the_split(options):
    CountingDecomposer.calls = 0
    deps = make_deps(FakeEstimator(kind="nli"), CountingDecomposer())
    with pytest.raises(InvalidArgumentError):
        await score_info_gain(reasoning_request(**options), deps, NO_DEADLINE)
    assert CountingDecomposer.calls == 0  # was 1: the decomposer's call, then the refusal


async def test_an_estimator_the_server_lacks_is_refused_before_the_split():
    CountingDecomposer.calls = 0
    deps = make_deps(FakeEstimator(), CountingDecomposer())

    async def no_lm(name):
        raise BackendNotConfiguredError("no causal LM is configured for InfoGain")

    deps = dataclasses.replace(deps, estimator=no_lm)
    with pytest.raises(BackendNotConfiguredError):
        await score_info_gain(reasoning_request(estimator="lm"), deps, NO_DEADLINE)
    assert CountingDecomposer.calls == 0
