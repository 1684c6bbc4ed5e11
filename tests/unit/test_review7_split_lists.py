"""List labels opening a line are never sentence ends: a claim never ends with the next item's label.

Before, "Facts:\\n1. Insulin lowers glucose." gave the claim "Facts:\\n1." (judged as knowledge), lower-case
and roman labels ("b.", "ii)", "(iii)", "II.") were glued to the end of the item before them or became
claims of their own.
"""

from __future__ import annotations

import re

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()
_DANGLING_LABEL = re.compile(r"(?:^|\n)[ \t]*\(?(?:\d{1,3}|[A-Za-z]{1,4})[.)]$")


def _claims(text: str) -> list[str]:
    return [c.text for s in SPLITTER.split(text).steps for c in s.claims]


@pytest.mark.parametrize("text, claims", [
    ("Facts:\n1. Insulin lowers glucose.\n2. Metformin is a biguanide.",
     ["Facts:\n1. Insulin lowers glucose.", "Metformin is a biguanide."]),
    ("The key facts are:\na. Insulin lowers glucose.\nb. Metformin is a biguanide.\nc. Glipizide is a sulfonylurea.",
     ["The key facts are:\na. Insulin lowers glucose.", "Metformin is a biguanide.", "Glipizide is a sulfonylurea."]),
    ("This gives the system:\n1. \\(a + b = 3\\),\n2. \\(a - b = 1\\).",
     ["This gives the system:\n1. \\(a + b = 3\\),", "\\(a - b = 1\\)."]),
    ("i. Insulin lowers glucose.\nii. Metformin is a biguanide.\niii. So the answer is B.",
     ["Insulin lowers glucose.", "Metformin is a biguanide.", "So the answer is B."]),
    ("(i) Insulin lowers glucose.\n(ii) Metformin is a biguanide.\n(iii) So the answer is B.",
     ["Insulin lowers glucose.", "Metformin is a biguanide.", "So the answer is B."]),
    ("ii) Metformin is a biguanide.\niii) So the answer is B.", ["Metformin is a biguanide.", "So the answer is B."]),
    ("I. Insulin lowers glucose.\nII. Metformin is a biguanide.\nIII. So the answer is B.",
     ["Insulin lowers glucose.", "Metformin is a biguanide.", "So the answer is B."]),
])
def test_list_items_are_claims_without_the_next_label(text, claims):
    assert _claims(text) == claims
    for claim in claims:
        assert not _DANGLING_LABEL.search(claim)


@pytest.mark.parametrize("text", [
    "i. Insulin lowers glucose.\nii. Metformin is a biguanide.\niii. So the answer is B.",
    "(i) Insulin lowers glucose.\n(ii) Metformin is a biguanide.",
    "I. Insulin lowers glucose.\nII. Metformin is a biguanide.\nIII. So the answer is B.",
])
def test_a_roman_numbered_list_is_one_step_per_item(text):
    steps = SPLITTER.split(text).steps
    assert [s.text for s in steps] == text.split("\n")
    for step in steps:
        assert [s.text for s in SPLITTER.split(step.text).steps] == [step.text]  # idempotent


def test_a_capitalised_abbreviation_or_a_wrapped_line_is_not_a_label():
    assert _claims("The patient has hepatitis B. The liver enzymes are high.") == [
        "The patient has hepatitis B.", "The liver enzymes are high."]
    assert _claims("It is caused by\ne. coli in most cases.") == ["It is caused by\ne. coli in most cases."]
