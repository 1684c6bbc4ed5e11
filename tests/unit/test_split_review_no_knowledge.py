"""NO_KNOWLEDGE: a range of values ("3.5-5.0 mEq/L") is a stated fact, not a subtraction on the problem's numbers."""

from __future__ import annotations

import pytest

from server.pipeline.no_knowledge import is_no_knowledge

QUESTION = ("A 60-year-old man with type 2 diabetes has a serum potassium of 6.1 mEq/L and takes metformin and "
            "lisinopril. Which drug should be stopped? A. Metformin B. Lisinopril C. Insulin")


@pytest.mark.parametrize("claim", [
    "Normal serum potassium is 3.5-5.0 mEq/L.",
    "Lisinopril raises serum potassium by 0.1-0.5 mEq/L.",
    "In a 30-60-90 triangle the hypotenuse is twice the short leg.",
])
def test_a_range_or_a_hyphenated_name_is_knowledge(claim):
    assert not is_no_knowledge(claim, QUESTION)


@pytest.mark.parametrize("claim, question", [
    ("So 20-5 = 15 apples are left.", "Tom has 20 apples and gives away 5. How many apples are left?"),
    ("She has 20 - 5 apples left.", "Tom has 20 apples and gives away 5. How many apples are left?"),
    ("Then $m^2-32>0$.", "For which m is m^2 > 32?"),
    ("The total is (52-5) apples.", "Tom has 52 apples and gives away 5. How many apples are left?"),
])
def test_subtraction_is_still_worked_arithmetic(claim, question):
    assert is_no_knowledge(claim, question)
