""""So the answer is B. Metformin." is one claim: the option's text after its letter is not a sentence of its own.

Before, the full stop after the letter ended a sentence, so "Metformin." (or "Metformin**.") became a claim of
its own; without the options in the question it was sent to the judge as a fact, came back not_enough_info and
turned the conclusion step into a knowledge step that lowered KI.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()
QUESTION = "Which drug is first-line for type 2 diabetes?"


@pytest.mark.parametrize("text", [
    "So the answer is B. Metformin.",
    "Answer: B. Metformin",
    "The correct answer is B. Metformin",
    "Therefore, the answer is **B. Metformin**.",
    "The answer is E. Acute pancreatitis",
])
def test_the_answer_letter_and_its_option_text_are_one_no_knowledge_claim(text):
    step = SPLITTER.split(text, QUESTION).steps[0]
    assert [c.text for c in step.claims] == [text]
    assert step.no_knowledge


@pytest.mark.parametrize("text, claims", [
    ("The answer is B. Metformin is first-line.", ["The answer is B.", "Metformin is first-line."]),
    ("The answer is C. Insulin drives potassium into cells.",
     ["The answer is C.", "Insulin drives potassium into cells."]),
    ("So the answer is B. This is because metformin lowers hepatic glucose output.",
     ["So the answer is B.", "This is because metformin lowers hepatic glucose output."]),
    ("The patient has hepatitis B. The liver enzymes are high.",
     ["The patient has hepatitis B.", "The liver enzymes are high."]),
    ("So the answer is B. Metformin. Next, check the dose.",
     ["So the answer is B. Metformin.", "Next, check the dose."]),
])
def test_a_sentence_after_the_answer_letter_is_still_a_claim_of_its_own(text, claims):
    assert [c.text for s in SPLITTER.split(text, QUESTION).steps for c in s.claims] == claims
