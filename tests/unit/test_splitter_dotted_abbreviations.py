"""A dotted abbreviation (b.i.d., i.v., a.m., U.S.) ends its sentence when a sentence opener follows: "500 mg b.i.d.
It lowers …" was one claim, so a fact could ride inside its neighbour (and inside a NO_KNOWLEDGE answer claim)."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def claims(text: str, question: str = "") -> list[str]:
    return [c.text for s in SPLITTER.split(text, question).steps for c in s.claims]


@pytest.mark.parametrize("text, expected", [
    ("So the answer is B, metformin 500 mg b.i.d. It lowers hepatic glucose output.",
     ["So the answer is B, metformin 500 mg b.i.d.", "It lowers hepatic glucose output."]),
    ("Kim wakes up at 6 a.m. She is a sleepwalker.", ["Kim wakes up at 6 a.m.", "She is a sleepwalker."]),
    ("The drug was approved in the U.S. The EMA followed a year later.",
     ["The drug was approved in the U.S.", "The EMA followed a year later."]),
])
def test_a_dotted_abbreviation_before_a_sentence_opener_ends_the_sentence(text, expected):
    assert claims(text) == expected


@pytest.mark.parametrize("text", [
    "Give ceftriaxone 1 g i.v. over 30 minutes.",
    "Start metformin p.o. Metformin-associated lactic acidosis is rare.",  # a name may follow; not a sentence cue
])
def test_other_dotted_abbreviations_do_not_end_the_sentence(text):
    assert len(claims(text)) == 1


def test_the_fact_after_an_answer_with_a_dose_is_judged():
    split = SPLITTER.split("So the answer is B, metformin 500 mg b.i.d. It lowers hepatic glucose output.",
                           "Which drug is started first for type 2 diabetes?")
    assert [c.no_knowledge for s in split.steps for c in s.claims] == [True, False]
