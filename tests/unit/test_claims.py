"""Claims inside a step: atomic where it is safe, always exact spans of the chain."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def claims(text: str) -> list[str]:
    result = SPLITTER.split(text)
    out = []
    for step in result.steps:
        for claim in step.claims:
            assert text[claim.start:claim.end] == claim.text  # never rewritten
            out.append(claim.text)
    return out


@pytest.mark.parametrize("text, expected", [
    ("Metformin inhibits hepatic gluconeogenesis and is renally cleared.",
     ["Metformin inhibits hepatic gluconeogenesis", "is renally cleared."]),
    ("Warfarin inhibits vitamin K epoxide reductase, and heparin activates antithrombin.",
     ["Warfarin inhibits vitamin K epoxide reductase", "heparin activates antithrombin."]),
    ("Lithium is cleared by the kidneys; thiazides reduce its clearance.",
     ["Lithium is cleared by the kidneys", "thiazides reduce its clearance."]),
    ("Vitamin K reverses warfarin, but protamine reverses heparin.",
     ["Vitamin K reverses warfarin", "protamine reverses heparin."]),
    ("Insulin raises glucose uptake, so the answer is B.", ["Insulin raises glucose uptake", "the answer is B."]),
])
def test_coordinated_statements_become_atomic_claims(text, expected):
    assert claims(text) == expected


@pytest.mark.parametrize("text", [
    "Metformin and sulfonylureas are oral drugs.",
    "The patient takes warfarin and aspirin.",
    "Metformin lowers glucose while sparing insulin secretion.",
    "Thiazides reduce lithium clearance (and raise levels and cause toxicity).",
    "We have $a and b = c$ and we are done here now.",
    "Salt and water are retained.",
])
def test_coordination_inside_a_phrase_brackets_or_math_stays_whole(text):
    assert claims(text) == [text]


def test_each_sentence_and_list_line_is_a_claim():
    text = "Thiazides act on the distal tubule.\n- They lower blood pressure.\n- They can raise calcium."
    assert claims(text) == ["Thiazides act on the distal tubule.", "They lower blood pressure.",
                            "They can raise calcium."]


def test_markup_is_not_part_of_a_claim():
    text = "### Step 2: Mechanism\n1. **Warfarin** blocks vitamin K recycling.\n**Step 3:** It is a VKA.\n</think>"
    assert claims(text) == ["**Warfarin** blocks vitamin K recycling.", "It is a VKA."]


def test_a_step_of_only_markup_has_no_claims_and_is_no_knowledge():
    step = SPLITTER.split("---").steps[0]
    assert step.claims == () and step.no_knowledge
