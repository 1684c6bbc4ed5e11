"""NO_KNOWLEDGE detection: the written rules, the team-labelled set and the demo chains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.pipeline.no_knowledge import is_no_knowledge
from server.pipeline.splitter import RuleSplitter

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "tests" / "data" / "no_knowledge"
SPLITTER = RuleSplitter()
QUESTION = ("A 58-year-old man has newly diagnosed type 2 diabetes and normal kidney function. "
            "Which drug is started first?")


@pytest.mark.parametrize("claim", [
    "Let's think step by step.",                                     # planning
    "We need to find the first-line drug.",
    "First, recall the drugs used for diabetes.",
    "Hmm, wait.",                                                    # meta talk
    "Let me double-check that.",
    "The patient is a 58-year-old man with type 2 diabetes.",        # restating the question
    "Newly diagnosed type 2 diabetes, normal kidney function.",
    "So the answer is B.",                                           # conclusion
    "Final answer: B",
    "\\boxed{42}",
    "So insulin.",                                                   # the conclusion, named without a verb
    "Therefore, metformin.",
    "She spends 7 × 3 = $21.",                                       # bare arithmetic
    "50 - 15 = 35",
    "Let x be the number of tablets.",
    "First, recall metformin.",                                      # a topic named, nothing said about it
    "Review the renal function tests.",
])
def test_claims_without_domain_knowledge(claim):
    assert is_no_knowledge(claim, QUESTION)


@pytest.mark.parametrize("claim", [
    "Metformin is the first-line drug for type 2 diabetes.",
    "Metformin lowers hepatic glucose output.",
    "Type 2 diabetes is usually treated first with metformin.",     # restates words but adds a fact
    "A week has 7 days.",
    "The area of a circle is π r^2.",
    "The sum of the interior angles of a polygon with n sides is (n - 2) × 180 degrees.",
    "Let's recall that metformin is contraindicated in severe renal impairment.",
    "Recall that metformin suppresses hepatic gluconeogenesis.",
    "Remember metformin is avoided in severe kidney disease.",
    "So metformin is avoided in severe kidney disease because of lactic acidosis.",
])
def test_claims_that_state_knowledge_are_judged(claim):
    assert not is_no_knowledge(claim, QUESTION)


def _scores(path: Path) -> tuple[float, float]:
    tp = fp = fn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        chain = json.loads(line)
        result = SPLITTER.split_steps([s["text"] for s in chain["steps"]], chain["question"])
        for step, gold in zip(result.steps, chain["steps"]):
            actual = gold["label"] == "no_knowledge"
            tp += step.no_knowledge and actual
            fp += step.no_knowledge and not actual
            fn += actual and not step.no_knowledge
    return tp / (tp + fp), tp / (tp + fn)


def test_labelled_set_is_large_enough_and_labelled_by_the_rule():
    rows = [json.loads(line) for p in LABELLED.glob("*.jsonl") for line in p.read_text().splitlines()]
    steps = [s for r in rows for s in r["steps"]]
    assert len(steps) >= 300
    assert {r["domain"] for r in rows} == {"medical", "math"}
    assert {s["label"] for s in steps} == {"knowledge", "no_knowledge"}


@pytest.mark.parametrize("part", ["dev", "test"])
def test_no_knowledge_precision_and_recall_on_the_labelled_set(part):
    precision, recall = _scores(LABELLED / f"{part}.jsonl")
    assert precision >= 0.90 and recall >= 0.70, (precision, recall)


def test_demo_chain_filler_steps_are_no_knowledge_and_fact_steps_are_not():
    rows = [json.loads(line) for line in (REPO / "client" / "demo" / "chains.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        result = SPLITTER.split_steps(row["steps"], row["question"])
        labels = [s.no_knowledge for s in result.steps]
        assert labels == [e == "no_knowledge" for e in row["expected"]], row["id"]


WORD_PROBLEM = ("Judy teaches 5 dance classes every day on the weekdays and 8 classes on Saturday. Each class "
                "has 15 students and she charges $15.00 per student. How much money does she make in 1 week?")
REWARDS = ("A loyalty card gives rewards of $1 off the next purchase for every $20 spent. On the last shopping trip "
           "the customer spent $80; on this trip $43, used the rewards and a coupon that took twice the amount of "
           "rewards off. How much did the customer pay on this trip?")


@pytest.mark.parametrize("claim, question", [
    ("The value of these rewards is 4 * $1 = $4.", REWARDS),                          # amounts in dollars
    ("The total discount is $4 (from the last trip) + $2 (half of the current rewards) = $6.", REWARDS),
    ("She teaches 5 classes a day, 5 days a week (Monday to Friday) = 5 * 5 = 25 classes.", WORD_PROBLEM),
    ("Therefore, the total amount of money made in a week = 495 students * $15/student = $7455.", WORD_PROBLEM),
])
def test_worked_arithmetic_with_currency_units_and_plurals_is_no_knowledge(claim, question):
    assert is_no_knowledge(claim, question)


@pytest.mark.parametrize("claim", [
    "A week has 7 days, so 5 * 7 = 35.",                       # a general fact beside the computation
    "Insulin doses are halved when 2 * 10 = 20 units cause hypoglycaemia in renal failure.",
])
def test_arithmetic_beside_a_stated_fact_is_still_judged(claim):
    assert not is_no_knowledge(claim, WORD_PROBLEM)


@pytest.mark.parametrize("claim", [
    "It is a biguanide.",
    "It is a cholinesterase inhibitor.",
    "This is best treated with propranolol.",
    "This is consistent with pericarditis.",
    "It is often given in angioedema",
    "This is a quadratic equation.",
])
def test_a_short_this_or_it_statement_about_its_subject_is_knowledge(claim):
    """The short "That/this/it is …" rule, meant for remarks on the work ("That is correct."), took every such
    statement of at most five words for talk: 18 MedBullets explanation claims like "It is a cholinesterase
    inhibitor." were NO_KNOWLEDGE and never judged."""
    assert not is_no_knowledge(claim, QUESTION)


@pytest.mark.parametrize("claim", [
    "That is correct.", "This is incorrect.", "It works.", "This fits.", "That is the answer.",
    "This is a contradiction.", "This is the same as before.", "This matches the given equation.",
    "This is still less than 17", "No, this is too low.", "it is the sixth-oldest.", "That is the mechanism.",
    "This is not sufficient.", "This is in the first quadrant.",
])
def test_a_short_remark_about_the_work_stays_no_knowledge(claim):
    assert is_no_knowledge(claim, QUESTION)


@pytest.mark.parametrize("claim", [
    "Question: Which drug is first-line for type 2 diabetes?",
    "Could this be pericarditis?",
    "Why is metformin first-line?",
    'The expression \\(\\log_2 1\\) asks the question: "To what power must 2 be raised to get 1?"',
    "**Is it the lowest?**",
])
def test_a_question_asserts_nothing(claim):
    """A claim that is a question was judged when it held a knowledge cue ("first-line"): the judge read a
    question as a statement to support or contradict."""
    assert is_no_knowledge(claim, QUESTION)


def test_the_statement_after_a_question_is_still_judged():
    claims = [c for s in SPLITTER.split("Why is metformin first-line? It lowers hepatic glucose output.",
                                        QUESTION).steps for c in s.claims]
    assert [c.no_knowledge for c in claims] == [True, False]


def test_a_label_line_is_read_for_what_follows_its_label():
    """"Given: …" restating the question was judged (its label counted as a word the question lacks), and a
    "Note:"/"Facts:" label kept its fact from the rules that read the claim's start."""
    assert is_no_knowledge("Given: a 58-year-old man with newly diagnosed type 2 diabetes.", QUESTION)
    assert is_no_knowledge(  # ProcessBench (OmniMath)
        "Given: \\(M\\) is the midpoint of \\(YZ\\), \\(\\angle XMZ = 30^\\circ\\), and \\(\\angle XYZ = 15^\\circ\\).",
        "What is the measure of $\\angle X Z Y$ if $M$ is the midpoint of $Y Z$, $\\angle X M Z=30^{\\circ}$, and "
        "$\\angle X Y Z=15^{\\circ}$?")
    assert not is_no_knowledge("Note: metformin is contraindicated in severe renal failure.", QUESTION)
    assert not is_no_knowledge("Facts:\nMetformin is first-line therapy for type 2 diabetes.", QUESTION)
    assert is_no_knowledge("Summary: so the answer is B.", QUESTION)


@pytest.mark.parametrize("claim, no_knowledge", [
    # a hedge before a statement: the statement is judged (an R1-style "I think X" hid X from KI)
    ("I think pioglitazone is contraindicated in heart failure.", False),
    ("I think it works by decreasing hepatic gluconeogenesis.", False),
    ("I'm fairly sure that warfarin is a vitamin K antagonist.", False),
    ("I think we need to find the first-line drug.", True),          # ... before planning stays planning
    ("I think so.", True),
    ("I think the answer is B.", True),
    ("I believe I made a mistake.", True),
    # "is likely" names the case's answer; "is likely to <verb>" states a tendency
    ("Hyperkalemia is likely to cause ventricular arrhythmias.", False),
    ("This is most likely metformin.", True),
    ("The diagnosis is most likely pneumonia.", True),
    # a conclusion's digits: a number about the case, not one inside a name
    ("So SGLT2 inhibitors promote glycosuria.", False),
    ("So COX-2 inhibitors spare the gastric mucosa.", False),
    ("So he has 12 tablets left.", True),
    ("So the total number of operations is n-1.", True),
    # a finding read as what it points to is knowledge, even said of the case (62 MedBullets claims were hidden)
    ("This patient presents with fever and a systolic murmur suggestive of bacterial endocarditis.", False),
    ("This patient is presenting with chest pain after endoscopy, suggesting esophageal perforation.", False),
    ("Recurrent swelling of the lips and tongue is concerning for hereditary angioedema.", False),
    ("So the drug of choice for absence seizures is ethosuximide.", False),
    ("So the answer is B.", True),
])
def test_hedges_tendencies_and_names_with_digits(claim, no_knowledge):
    assert is_no_knowledge(claim, QUESTION) is no_knowledge
