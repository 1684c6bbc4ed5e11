"""LLM decomposer alignment: the earliest copy after the previous step wins; flipped labels keep claim subjects."""

from __future__ import annotations

from server.backends.splitters.alignment import StepAligner
from server.backends.splitters.llm_decomposer import LlmDecomposer


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
