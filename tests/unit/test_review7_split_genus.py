"""An abbreviated genus opening a claim ("E. coli", "C. difficile", "S. aureus") is part of the claim, not a label.

Before, "C. difficile infection should be suspected ..." became the claim "difficile infection should be suspected
...": the upper-case letter was stripped as an option label, and the judge read a claim about "difficile".
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def _claims(text: str) -> list[str]:
    return [c.text for s in SPLITTER.split(text).steps for c in s.claims]


@pytest.mark.parametrize("text, claims", [
    ("E. coli is the most common cause of UTI.", ["E. coli is the most common cause of UTI."]),
    ("The stool toxin test is positive. C. difficile is treated with oral vancomycin.",
     ["The stool toxin test is positive.", "C. difficile is treated with oral vancomycin."]),
    ("S. aureus pneumonia follows influenza.\nH. pylori causes peptic ulcers.",
     ["S. aureus pneumonia follows influenza.", "H. pylori causes peptic ulcers."]),
])
def test_a_genus_letter_stays_in_the_claim(text, claims):
    assert _claims(text) == claims


@pytest.mark.parametrize("text, claims", [
    ("A. Insulin\nB. Metformin", ["Insulin", "Metformin"]),
    ("A) increased ADH\nB) decreased ADH", ["increased ADH", "decreased ADH"]),
    ("a. insulin lowers glucose.\nb. metformin is a biguanide.",
     ["insulin lowers glucose.", "metformin is a biguanide."]),
])
def test_option_and_list_labels_are_still_left_out(text, claims):
    assert _claims(text) == claims
