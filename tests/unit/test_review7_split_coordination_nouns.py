"""A noun or adjective that looks like a verb does not open a new claim after "and".

Before, "paresis of the upper and lower extremities" was cut into "... paresis of the upper" and "lower
extremities." (judged as "Lesions ... lower extremities."), and "bloating, and lack of flatus" into "... bloating"
and "lack of flatus ...": "lower" and "lack" were read as verbs continuing the sentence.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def _claims(text: str) -> list[tuple[str, str]]:
    return [(c.text, c.subject) for s in SPLITTER.split(text).steps for c in s.claims]


@pytest.mark.parametrize("text", [
    "Lesions to the lateral corticospinal tract lead to contralateral paresis of the upper and lower extremities.",
    "ALS is a neurodegenerative disease that affects both upper and lower motor neurons.",
    "Ileus causes nausea, vomiting, bloating, and lack of flatus or bowel movements.",
    "Reflux can be managed with more frequent, thicker and lower volume feeds.",
    "Mild cognitive impairment is a stage between normal aging and forms of dementia.",
])
def test_a_noun_phrase_after_and_stays_in_the_claim(text):
    assert _claims(text) == [(text, "")]


@pytest.mark.parametrize("text, claims", [
    ("ACE inhibitors block angiotensin II formation and lower blood pressure.",
     [("ACE inhibitors block angiotensin II formation", ""), ("lower blood pressure.", "ACE inhibitors")]),
    ("Metformin inhibits hepatic gluconeogenesis and is renally cleared.",
     [("Metformin inhibits hepatic gluconeogenesis", ""), ("is renally cleared.", "Metformin")]),
])
def test_a_verb_phrase_after_and_is_still_a_claim(text, claims):
    assert _claims(text) == claims
