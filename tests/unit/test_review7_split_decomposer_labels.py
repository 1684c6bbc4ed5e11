"""The LLM decomposer: a label the model left out of a step's text starts that step, never ends the one before.

Models copying "It lowers glucose." out of "1. Metformin is first-line.\\n2. It lowers glucose." drop the
numbering. Before, the step before ended with the next one's label ("1. Metformin is first-line.\\n2."), which
became a claim "2." sent to the judge as knowledge; "**Step 2:**" title lines were left behind the same way.
"""

from __future__ import annotations

import pytest

from server.backends.splitters.alignment import with_labels
from server.backends.splitters.llm_decomposer import LlmDecomposer
from server.pipeline.runtime import Blocking

DECOMPOSER = LlmDecomposer(None, "judge", Blocking(None))  # type: ignore[arg-type]  # _result makes no call


def _steps(chain: str, texts: list[str]) -> list[str]:
    parsed = [{"planning": "", "knowledge": "a fact", "step_text": t} for t in texts]
    result = DECOMPOSER._result(chain, "", parsed)
    for step in result.steps:
        assert chain[step.start:step.end] == step.text
        assert all(chain[c.start:c.end] == c.text for c in step.claims)
    return [s.text for s in result.steps]


@pytest.mark.parametrize("chain, texts, steps", [
    ("1. Metformin is first-line.\n2. It lowers glucose.\n3. So the answer is B.",
     ["Metformin is first-line.", "It lowers glucose.", "So the answer is B."],
     ["1. Metformin is first-line.", "2. It lowers glucose.", "3. So the answer is B."]),
    ("Step 1: Metformin is first-line.\nStep 2: It lowers glucose.",
     ["Metformin is first-line.", "It lowers glucose."],
     ["Step 1: Metformin is first-line.", "Step 2: It lowers glucose."]),
    ("**Step 1:** Metformin is first-line.\r\n**Step 2:** It lowers glucose.",
     ["Metformin is first-line.", "It lowers glucose."],
     ["**Step 1:** Metformin is first-line.", "**Step 2:** It lowers glucose."]),
    ("- Metformin is first-line.\n- It lowers glucose.", ["Metformin is first-line.", "It lowers glucose."],
     ["- Metformin is first-line.", "- It lowers glucose."]),
    ("(i) The patient has DKA.\n(ii) Insulin is the mainstay.", ["The patient has DKA.", "Insulin is the mainstay."],
     ["(i) The patient has DKA.", "(ii) Insulin is the mainstay."]),
    ("### Step 1: Diagnosis\nThe patient has DKA.\n\n### Step 2: Treatment\nInsulin is the mainstay.",
     ["The patient has DKA.", "Insulin is the mainstay."],
     ["### Step 1: Diagnosis\nThe patient has DKA.", "### Step 2: Treatment\nInsulin is the mainstay."]),
    ("The patient has DKA. 2. Insulin is the mainstay.", ["The patient has DKA.", "Insulin is the mainstay."],
     ["The patient has DKA.", "2. Insulin is the mainstay."]),
])
def test_a_left_out_label_starts_its_step(chain, texts, steps):
    assert _steps(chain, texts) == steps


def test_no_claim_is_a_bare_label():
    chain = "1. Metformin is first-line.\n2. It lowers glucose.\n3. So the answer is B."
    parsed = [{"planning": "", "knowledge": "a fact", "step_text": t}
              for t in ["Metformin is first-line.", "It lowers glucose.", "So the answer is B."]]
    claims = [c.text for s in DECOMPOSER._result(chain, "", parsed).steps for c in s.claims]
    assert claims == ["Metformin is first-line.", "It lowers glucose.", "So the answer is B."]


@pytest.mark.parametrize("chain, starts", [
    ("The patient has DKA.\n**Insulin lowers potassium.**\nSo give potassium.", [0, 51]),  # a bold sentence is text
    ("2.\n3. Insulin is the mainstay.", [0, 3]),  # the step before keeps its text
    ("Metformin is first-line, 2. It lowers glucose.", [0, 28]),  # no sentence end before "2."
])
def test_text_that_is_not_a_left_out_label_stays_where_it_is(chain, starts):
    assert with_labels(chain, starts) == starts
