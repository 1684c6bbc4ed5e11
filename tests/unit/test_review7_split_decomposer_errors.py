"""A decomposer step that repeats an earlier one is reported as such, not as text missing from the chain.

Before, a model that put out "Metformin is first-line." twice failed the request with "the LLM decomposer rewrote
the chain: step 1 is not in the chain: 'Metformin is first-line.'", though the text is right there in the chain.
"""

from __future__ import annotations

import pytest

from server.backends.splitters.llm_decomposer import LlmDecomposer
from server.pipeline.errors import BackendResponseError
from server.pipeline.runtime import Blocking

DECOMPOSER = LlmDecomposer(None, "judge", Blocking(None))  # type: ignore[arg-type]  # _result makes no call
CHAIN = "Metformin is first-line. It lowers hepatic glucose output."


def _result(texts: list[str]):
    return DECOMPOSER._result(CHAIN, "", [{"planning": "", "knowledge": "", "step_text": t} for t in texts])


@pytest.mark.parametrize("texts", [
    ["Metformin is first-line.", "Metformin is first-line.", "It lowers hepatic glucose output."],
    ["It lowers hepatic glucose output.", "Metformin is first-line."],
])
def test_a_repeated_or_reordered_step_is_named(texts):
    with pytest.raises(BackendResponseError, match="repeated or reordered") as err:
        _result(texts)
    assert "not after the step before it" in str(err.value) and "not in the chain" not in str(err.value)


def test_a_rewritten_step_is_still_not_in_the_chain():
    with pytest.raises(BackendResponseError, match="rewrote the chain: step 1 is not in the chain"):
        _result(["Metformin is first-line.", "Sulfonylureas cause weight gain."])
