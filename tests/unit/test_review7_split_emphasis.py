"""Bold markers do not change a claim's NO_KNOWLEDGE label: "**Answer:** B" is an answer line like "Answer: B".

Before, "**Answer:** B" and "**Final Answer:** B." (the most common answer line of chat models) were sent to
the judge as knowledge, came back not_enough_info and lowered KI; the same line without bold was NO_KNOWLEDGE.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()
QUESTION = "Which drug is first-line for type 2 diabetes? A. Insulin B. Metformin C. Glipizide"


@pytest.mark.parametrize("text", [
    "**Answer:** B",
    "**Final Answer:** B.",
    "__Answer:__ B",
    "**Answer:** Verna received $7.00 in change.",
])
def test_a_bold_answer_line_is_no_knowledge_as_without_bold(text):
    plain = text.replace("**", "").replace("__", "")
    assert SPLITTER.split(plain).steps[0].no_knowledge
    step = SPLITTER.split(text, QUESTION).steps[0]
    assert step.no_knowledge and step.claims and all(c.no_knowledge for c in step.claims)
    assert step.claims[0].text.startswith(text[:2])  # the claim keeps its text and offsets


@pytest.mark.parametrize("text", [
    "**Metformin** inhibits hepatic gluconeogenesis.",
    "**Key point:** Metformin causes lactic acidosis.",
    "The power x**2 is always non-negative for a real x.",
])
def test_bold_knowledge_is_still_judged(text):
    assert not SPLITTER.split(text, QUESTION).steps[0].no_knowledge
