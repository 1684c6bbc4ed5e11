"""A clause that leaves out its verb phrase ("..., but ARBs do not") stays with the clause it depends on."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def _claims(text: str) -> list[str]:
    return [c.text for s in SPLITTER.split(text).steps for c in s.claims]


@pytest.mark.parametrize("text", [
    "ACE inhibitors cause cough, but ARBs do not.",
    "ACE inhibitors cause cough, but ARBs don't.",
    "Warfarin does not inhibit COX, but aspirin does.",
    "Heparin is safe in pregnancy; warfarin is not.",
    "Warfarin crosses the placenta, whereas heparin doesn't.",
    "Metformin causes weight loss, and so does liraglutide.",
    "Beta blockers do not cause cough, and neither do ARBs.",
    "Type 1 diabetes is not associated with PCOS, but type 2 diabetes is.",
])
def test_an_elliptical_clause_is_not_split_off(text):
    assert _claims(text) == [text]


@pytest.mark.parametrize("text, claims", [
    ("ACE inhibitors cause cough, but ARBs do not cause cough.",
     ["ACE inhibitors cause cough", "ARBs do not cause cough."]),
    ("The original radius was 8, and the new radius is 4.", ["The original radius was 8", "the new radius is 4."]),
    ("Metformin lowers glucose but does not cause hypoglycemia.",
     ["Metformin lowers glucose", "does not cause hypoglycemia."]),
])
def test_full_clauses_are_still_split(text, claims):
    assert _claims(text) == claims
