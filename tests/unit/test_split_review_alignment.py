"""LLM decomposer alignment: earliest copy wins, overlaps, added labels, Unicode forms, empty steps, claim subjects."""

from __future__ import annotations

import unicodedata

import pytest

from server.backends.splitters.alignment import StepAligner, StepNotFoundError
from server.backends.splitters.llm_decomposer import LlmDecomposer
from server.pipeline.errors import BackendResponseError


def _pieces(chain: str, steps: list[str]) -> list[str]:
    bounds = StepAligner(chain).starts(steps) + [len(chain)]
    return [chain[a:b] for a, b in zip(bounds, bounds[1:])]


def test_a_respaced_copy_before_an_exact_one_is_the_step():
    # the model collapsed the double space of step 0; "x = 2." also occurs verbatim in the last step
    chain = "x =  2.\nThen y = 3.\nCheck: x = 2."
    assert _pieces(chain, ["x = 2.", "Then y = 3.", "Check: x = 2."]) == ["x =  2.\n", "Then y = 3.\n",
                                                                          "Check: x = 2."]


def test_a_recased_copy_before_an_exact_one_is_the_step():
    chain = "the answer is B. Wait, let me check. The answer is B."
    assert _pieces(chain, ["The answer is B.", "Wait, let me check.", "The answer is B."]) == [
        "the answer is B. ", "Wait, let me check. ", "The answer is B."]


def test_an_exact_copy_is_kept_when_no_earlier_copy_exists():
    chain = "Warfarin blocks VKOR. Warfarin blocks VKOR."
    assert StepAligner(chain).starts(["Warfarin blocks VKOR.", "Warfarin blocks VKOR."]) == [0, 22]


def test_claims_the_model_calls_knowledge_keep_their_borrowed_subject():
    question = "A 60-year-old man takes metformin and has a potassium of 6.1 mEq/L. Which drug should be stopped?"
    text = "The man takes metformin and has a potassium of 6.1 mEq/L."
    dec = LlmDecomposer(client=None, model="m", blocking=None)
    rules = dec.rules.split_steps([text], question).steps[0].claims
    assert all(c.no_knowledge for c in rules) and rules[1].subject == "The man"
    step = dec._result(text, question, [{"planning": "p", "knowledge": "Metformin is renally cleared.",
                                         "step_text": text}]).steps[0]
    assert [(c.text, c.subject, c.no_knowledge) for c in step.claims] == [
        (c.text, c.subject, False) for c in rules]
    assert step.claims[1].judged_text == "The man has a potassium of 6.1 mEq/L."
    filler = dec._result(text, question, [{"planning": "p", "knowledge": "", "step_text": text}]).steps[0]
    assert [c.subject for c in filler.claims] == [c.subject for c in rules] and filler.no_knowledge


def test_a_step_that_repeats_the_end_of_the_previous_one_starts_where_its_copy_starts():
    chain = "Metformin lowers glucose. It is renally cleared. So the answer is B."
    assert _pieces(chain, ["Metformin lowers glucose. It is renally cleared.",
                           "It is renally cleared. So the answer is B."]) == [
        "Metformin lowers glucose. ", "It is renally cleared. So the answer is B."]


def test_a_fragment_repeated_from_inside_the_previous_step_is_still_not_found():
    chain = "Metformin lowers glucose. It is renally cleared. So the answer is B."
    with pytest.raises(StepNotFoundError):
        StepAligner(chain).starts([chain, "It is renally cleared."])


@pytest.mark.parametrize("label", ["1. ", "Step 1: ", "- ", "* ", "• ", "2) "])
def test_a_label_the_model_added_in_front_of_a_step_is_ignored(label):
    chain = "Metformin lowers glucose. Insulin is a hormone."
    assert _pieces(chain, [f"{label}Metformin lowers glucose.", f"{label}Insulin is a hormone."]) == [
        "Metformin lowers glucose. ", "Insulin is a hormone."]


@pytest.mark.parametrize("chain_form, copy_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_copies_in_another_unicode_normal_form_align(chain_form, copy_form):
    raw = ["Le café est très chaud.", "Ensuite, la crème brûlée arrive."]
    chain = unicodedata.normalize(chain_form, " ".join(raw))
    copies = [unicodedata.normalize(copy_form, p) for p in raw]
    pieces = _pieces(chain, copies)
    assert [unicodedata.normalize("NFC", p.strip()) for p in pieces] == [unicodedata.normalize("NFC", p) for p in raw]


def test_a_step_with_an_empty_step_text_is_left_out_and_no_text_is_lost():
    text = "Metformin lowers glucose. So the answer is B."
    dec = LlmDecomposer(client=None, model="m", blocking=None)
    steps = dec._result(text, "", [
        {"planning": "a", "knowledge": "Metformin lowers glucose.", "step_text": "Metformin lowers glucose."},
        {"planning": "b", "knowledge": "", "step_text": "  "},
        {"planning": "c", "knowledge": "", "step_text": "So the answer is B."}]).steps
    assert [(s.text, s.planning) for s in steps] == [("Metformin lowers glucose.", "a"), ("So the answer is B.", "c")]
    with pytest.raises(BackendResponseError):
        dec._result(text, "", [{"planning": "a", "knowledge": "", "step_text": ""}])
