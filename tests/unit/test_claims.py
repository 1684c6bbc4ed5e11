"""Claims inside a step: atomic where it is safe, always exact spans of the chain."""

from __future__ import annotations

import numpy as np
import pytest

from server.pipeline.deadline import Deadline
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


@pytest.mark.parametrize("text, subjects", [
    ("Metformin inhibits hepatic gluconeogenesis and is renally cleared.", ["", "Metformin"]),
    ("Drugs that inhibit CYP3A4 raise statin levels and increase the risk of myopathy.",
     ["", "Drugs that inhibit CYP3A4"]),
    ("Warfarin inhibits vitamin K epoxide reductase, and heparin activates antithrombin.", ["", ""]),  # own subject
    ("Is warfarin safe, and is it reversible?", ["", ""]),  # no subject before the verb: none borrowed
    # a verb phrase continues the clause just before it, not the sentence's first one
    ("Warfarin inhibits vitamin K epoxide reductase, and heparin activates antithrombin and is given by infusion.",
     ["", "", "heparin"]),
])
def test_a_claim_continuing_a_verb_phrase_borrows_the_subject_for_judging_only(text, subjects):
    step = SPLITTER.split(text).steps[0]
    assert [c.subject for c in step.claims] == subjects[:len(step.claims)]
    for claim in step.claims:
        assert text[claim.start:claim.end] == claim.text  # the claim is still the exact span
        assert claim.judged_text == (f"{claim.subject} {claim.text}" if claim.subject else claim.text)


async def test_retrieval_and_the_judge_read_the_borrowed_subject():
    from server.pipeline.deps import PipelineDeps
    from server.pipeline.knowledge_index import score_knowledge
    from server.pipeline.runtime import Blocking
    from server.pipeline.types import (ChainInput, Judgement, KnowledgeRequest, LabelProbs, Passage, Tier,
                                       Verdict)
    from server.pipeline.validation import Limits

    asked, embedded = [], []

    class Judge:
        name, prompt_version = "recording", ""

        async def judge(self, items, deadline):
            asked.extend(item.claim for item in items)
            return [Judgement(Verdict.SUPPORTED, LabelProbs(0.9, 0.05, 0.05), Tier.EMBEDDED) for _ in items]

    async def embed(texts, deadline):
        embedded.extend(texts)
        return np.ones((len(texts), 4), dtype=np.float32)

    async def splitter(name):
        return SPLITTER

    async def judge(name):
        return Judge()

    deps = PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=splitter, judge=judge,
                        estimator=None, knowledge_base=lambda: None, embedder=lambda: None, embed=embed)
    text = "Metformin inhibits hepatic gluconeogenesis and is renally cleared."
    result = await score_knowledge(KnowledgeRequest(ChainInput(steps=(text,)), context=(Passage("p", "fact"),)),
                                   deps, Deadline())
    assert asked == ["Metformin inhibits hepatic gluconeogenesis", "Metformin is renally cleared."]
    assert embedded[:2] == asked
    claims = result.steps[0].claims
    assert [c.claim.text for c in claims] == ["Metformin inhibits hepatic gluconeogenesis", "is renally cleared."]
    assert all(c.verdict is Verdict.SUPPORTED for c in claims)


@pytest.mark.parametrize("text, expected", [
    # a verb phrase continuing a relative or causal clause is not given the sentence's subject
    ("The management of rhabdomyolysis is fluids to protect the kidney from myoglobin which is released from "
     "damaged muscles and is nephrotoxic.", 1),
    ("Rapid antigen testing is not indicated because she has a cough and does not have tonsillar exudates.", 1),
    ("Answer E: Sumatriptan may be indicated to treat a migraine, which presents with a pulsatile, unilateral "
     "headache and is more common in women.", 1),
    # ... but a relative clause on the copula's own noun is about the same thing
    ("Actinomyces is a gram-positive anaerobic rod that presents with sinus tracts and should be treated with "
     "penicillin.", 2),
    ("Metformin, which is cheap, lowers glucose and is renally cleared.", 2),
    ("Metformin inhibits hepatic gluconeogenesis and is renally cleared.", 2),
    # a number after the conjunction is the next clause's subject: no verb phrase to borrow one for
    ("This is greater than 17 and 2709 is a valid number.", 1),
])
def test_a_verb_phrase_continuing_a_subordinate_clause_is_not_split_off(text, expected):
    assert len(claims(text)) == expected


def test_question_marks_inside_an_open_bracket_do_not_end_a_unit():
    """BIG-Bench word sorting writes an unknown order as '["being" ? "bellyache"]': each "?" cut a claim."""
    text = 'We now have: (2) ["being" ? "bellyache" ? "widen"] < (3) "cider" < (4) ["depression" ? "decant"] < (5) "eel".'
    assert claims(text) == [text]
    assert claims("Is it croup? It could be.") == ["Is it croup?", "It could be."]


@pytest.mark.parametrize("text, expected", [
    # the last item of a list is no clause subject ...
    ("Strep pharyngitis presents with fever, sore throat, and pharyngeal erythema, and is treated with rest.",
     ["Strep pharyngitis presents with fever, sore throat, and pharyngeal erythema, and is treated with rest."]),
    ("To count houses that have a dog, a cat, and a turtle, we need inclusion-exclusion.",
     ["To count houses that have a dog, a cat, and a turtle, we need inclusion-exclusion."]),
    # ... while a clause after a connective adverb still is one
    ("Gastroenteritis would present with nausea, vomiting, and diarrhea; however, it would not present with sepsis.",
     ["Gastroenteritis would present with nausea, vomiting, and diarrhea",
      "however, it would not present with sepsis."]),
])
def test_the_last_item_of_a_list_is_not_taken_for_a_clause(text, expected):
    assert claims(text) == expected
