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


MCQ = "Which of the following drugs is a sulfonylurea? A. Insulin B. Glipizide C. Metformin D. Sitagliptin"


@pytest.mark.parametrize("claim", [
    "Insulin is not a sulfonylurea.",
    "So insulin is not a sulfonylurea.",
    "Metformin isn't a sulfonylurea.",
    "Sitagliptin is never classed with the sulfonylureas.",
])
def test_a_negated_relation_between_the_questions_words_is_knowledge(claim):
    # every content word is in the question, but the claim says what the question does not
    assert not is_no_knowledge(claim, MCQ)


@pytest.mark.parametrize("claim, question", [
    ("It is not a sulfonylurea.", MCQ),  # a short sentence about the case
    ("So the answer is not A.", MCQ),
    ("This is not in simplest radical form.", "Simplify the radical sqrt(72) into simplest radical form."),
    ("The patient has no fever and no rash.", "A 5-year-old boy has no fever and no rash. What is the diagnosis?"),
    ("Insulin is not a sulfonylurea.", "Which of the following drugs is not a sulfonylurea? A. Insulin B. Glipizide"),
])
def test_negations_that_restate_or_talk_about_the_case_stay_no_knowledge(claim, question):
    assert is_no_knowledge(claim, question)


@pytest.mark.parametrize("claim", [
    "Hmm, interesting.",
    "Wait, I made a mistake.",
    "Alternatively, maybe I'm wrong.",
    "I recall something about this.",
    "Yes, correct.",
    "Hmm, I'm not sure about that.",
    "But wait, maybe the question is tricky.",
    "That doesn't seem right.",
    "Moving on to the next option.",
    "Now, considering option D.",
    "Putting it all together.",
    "To recap:",
    "Oops!",
])
def test_talk_about_the_reasoning_is_no_knowledge(claim):
    assert is_no_knowledge(claim, MCQ)


@pytest.mark.parametrize("claim", [
    "Wait, insulin is a hormone.",
    "Not all sulfonylurea cases are obvious.",
    "We see that: f(-x) = -f(x) for an odd function.",
    "Hmm, the error rate is 5 percent.",
])
def test_talk_with_a_fact_or_an_equation_in_it_is_judged(claim):
    assert not is_no_knowledge(claim, MCQ)


URI = ("A 58-year-old man has type 2 diabetes and a viral upper respiratory infection. Which drug is first-line "
       "therapy for his diabetes, and are antibiotics needed?")


def test_a_leading_no_that_negates_the_claim_is_not_an_interjection():
    # "No" was stripped as an opener: the claim became "antibiotics are needed for ..." (a restatement)
    assert not is_no_knowledge("No antibiotics are needed for a viral upper respiratory infection.", URI)


@pytest.mark.parametrize("claim", ["No, that is wrong.", "No. Let me redo this.", "Hmm, no, wait."])
def test_no_before_punctuation_is_still_an_interjection(claim):
    assert is_no_knowledge(claim, URI)
