"""A list label closed by ")" is not a sentence end: "a) The patient ..." has no claim "a)"."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


@pytest.mark.parametrize("text, claims", [
    ("a) The patient has hyperkalemia.\nb) Insulin shifts potassium into cells.\nc) So the answer is B.",
     [["The patient has hyperkalemia."], ["Insulin shifts potassium into cells."], ["So the answer is B."]]),
    ("1) First, recall the drug classes.\n2) Then metformin is a biguanide.",
     [["First, recall the drug classes."], ["Then metformin is a biguanide."]]),
    ("(1) Therefore the answer is B.", [["Therefore the answer is B."]]),
])
def test_a_label_and_a_cue_word_make_one_claim(text, claims):
    result = SPLITTER.split(text)
    assert [[c.text for c in s.claims] for s in result.steps] == claims
    for step in result.steps:
        assert SPLITTER.split(step.text).steps[0].text == step.text  # idempotent


def test_a_bracket_closing_a_formula_still_ends_a_unit_before_a_cue():
    text = "We get f(x) = (x + 1) However, x is positive."
    assert [c.text for c in SPLITTER.split(text).steps[0].claims] == ["We get f(x) = (x + 1)",
                                                                     "However, x is positive."]
