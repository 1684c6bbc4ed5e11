"""The rule splitter on the shapes real reasoning models emit."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter, sentence_spans

SPLITTER = RuleSplitter()


def texts(chain: str) -> list[str]:
    return [s.text for s in SPLITTER.split(chain).steps]


def test_think_block_paragraphs_are_steps_and_tags_stay_with_their_text():
    chain = ("<think>\nOkay, let me think.\n\nWarfarin is a vitamin K antagonist.\n\nSo it is B.\n</think>\n\n"
             "The answer is B.")
    assert texts(chain) == ["<think>\nOkay, let me think.", "Warfarin is a vitamin K antagonist.",
                            "So it is B.\n</think>", "The answer is B."]


def test_empty_think_block_joins_the_answer():
    assert texts("<think>\n\n</think>\n\nMetformin is first-line.") == [
        "<think>\n\n</think>\n\nMetformin is first-line."]


def test_step_k_lines_are_steps_and_keep_their_lists():
    chain = ("Step 1: List the facts:\n- Warfarin is a vitamin K antagonist.\n- Heparin acts on antithrombin.\n"
             "Step 2: Vitamin K reverses warfarin.\nStep 3: So the answer is B.")
    assert texts(chain) == [
        "Step 1: List the facts:\n- Warfarin is a vitamin K antagonist.\n- Heparin acts on antithrombin.",
        "Step 2: Vitamin K reverses warfarin.", "Step 3: So the answer is B."]


def test_inline_step_markers_split_a_line():
    assert texts("We go in order. Step 1: Add 2 and 3. Step 2: Double it.") == [
        "We go in order.", "Step 1: Add 2 and 3.", "Step 2: Double it."]


def test_numbered_and_bulleted_list_paragraphs_give_one_step_per_item():
    chain = "1. Metformin lowers hepatic glucose output.\n2) Insulin raises uptake.\n\n- One.\n* Two.\n• Three."
    assert texts(chain) == ["1. Metformin lowers hepatic glucose output.", "2) Insulin raises uptake.",
                            "- One.", "* Two.", "• Three."]


def test_a_list_introduced_by_text_stays_with_that_text():
    chain = "The options are:\n- A. Insulin\n- B. Metformin\n\nMetformin is first-line."
    assert texts(chain) == ["The options are:\n- A. Insulin\n- B. Metformin", "Metformin is first-line."]


def test_headings_join_the_paragraph_they_introduce():
    chain = "## Mechanism\n\nMetformin inhibits gluconeogenesis.\n\n## Steps\n\nStep 1: B.\nStep 2: Done."
    assert texts(chain) == ["## Mechanism\n\nMetformin inhibits gluconeogenesis.", "## Steps", "Step 1: B.",
                            "Step 2: Done."]


def test_blank_line_paragraphs_are_steps_even_with_several_sentences():
    chain = "Warfarin is a VKA. It needs INR checks.\n\nVitamin K reverses it. So the answer is B."
    assert texts(chain) == ["Warfarin is a VKA. It needs INR checks.", "Vitamin K reverses it. So the answer is B."]


def test_a_run_on_paragraph_is_split_into_sentences():
    chain = ("Let's think. Metformin is first-line, e.g. in adults, vs. insulin. Dr. Lee gives 2.5 mg/kg. "
             "Then 0.9% NaCl is infused at 1.5 L. Next, we compute $x = 2.5$ and \\(y = 3.1\\). "
             "Now the dose is 5 mg. So the answer is B. Finally, we check it.")
    assert texts(chain) == [
        "Let's think.", "Metformin is first-line, e.g. in adults, vs. insulin.", "Dr. Lee gives 2.5 mg/kg.",
        "Then 0.9% NaCl is infused at 1.5 L.", "Next, we compute $x = 2.5$ and \\(y = 3.1\\).",
        "Now the dose is 5 mg.", "So the answer is B.", "Finally, we check it."]


def test_a_short_paragraph_is_one_step():
    assert texts("Metformin is first-line. It lowers glucose. So the answer is B.") == [
        "Metformin is first-line. It lowers glucose. So the answer is B."]


@pytest.mark.parametrize("sentence", [
    "The dose is 2.5 mg/kg i.e. about 175 mg.", "Give 0.9% NaCl vs. Ringer's solution.",
    "As shown by Smith et al. in 2019 this holds.", "Use approx. 3.14 for pi.", "See Fig. 2 for the curve.",
    "Since $x > 0. 5$ holds we stop.", "Compute \\[ a = b. \\] here.", "In the U.S. it is common.",
])
def test_abbreviations_decimals_and_math_do_not_end_sentences(sentence):
    assert len(sentence_spans(sentence, 0, len(sentence))) == 1


def test_display_math_ends_a_unit_but_never_starts_one():
    text = "We get: \\[ x = 5 \\] Then y follows. It is: \\[ y = 2 \\]"
    assert [text[s:e] for s, e in sentence_spans(text, 0, len(text))] == [
        "We get: \\[ x = 5 \\]", "Then y follows.", "It is: \\[ y = 2 \\]"]


def test_equations_on_their_own_lines_stay_with_their_sentence():
    chain = "We solve:\n\\[\nx^2 = 4. Then\n\\]\nso x = 2.\n\nFinal answer: 2"
    assert texts(chain) == ["We solve:\n\\[\nx^2 = 4. Then\n\\]\nso x = 2.", "Final answer: 2"]


def test_code_blocks_are_never_split():
    chain = "Here is code:\n\n```python\nx = 1.5\n\n# A comment. Not a step\n- no item\n```\n\nThe answer is 1.5."
    assert texts(chain) == ["Here is code:", "```python\nx = 1.5\n\n# A comment. Not a step\n- no item\n```",
                            "The answer is 1.5."]


def test_a_paragraph_with_nothing_visible_is_not_a_step():
    text = "Aspirin inhibits COX.\n\n\u200b\ufeff\n\nSo the answer is B.\n\n\u2060"
    assert texts(text) == ["Aspirin inhibits COX.", "So the answer is B."]
    assert texts("- Warfarin is a VKA.\n- \u200b\n- Heparin acts fast.") == [
        "- Warfarin is a VKA.", "- \u200b", "- Heparin acts fast."]  # a list marker shows: the item stays a step


def test_final_answer_lines_are_their_own_step():
    assert texts("Metformin is first-line.\nFinal Answer: B") == ["Metformin is first-line.", "Final Answer: B"]
    assert texts("Metformin is first-line.\nAnswer: B") == ["Metformin is first-line.", "Answer: B"]


def test_dollar_amounts_are_not_math():
    text = "She paid $50. Then she got $30 back. So $20 was spent."
    assert len(sentence_spans(text, 0, len(text))) == 3


def test_pre_split_steps_are_not_resplit_and_offsets_follow_the_newline_join():
    steps = ["  Warfarin is a VKA. It needs INR checks. ", "So the answer is B."]
    result = SPLITTER.split_steps(steps, "q")
    assert result.chain_text == "\n".join(steps)
    assert [(s.start, s.end, s.text) for s in result.steps] == [
        (2, 41, "Warfarin is a VKA. It needs INR checks."), (43, 62, "So the answer is B.")]
    assert [c.text for c in result.steps[0].claims] == ["Warfarin is a VKA.", "It needs INR checks."]


def test_claims_drop_markup_and_titles():
    result = SPLITTER.split("**Step 1: Recall facts**\n- Warfarin is a vitamin K antagonist.")
    assert [c.text for c in result.steps[0].claims] == ["Warfarin is a vitamin K antagonist."]


def test_no_knowledge_step_when_all_claims_are_no_knowledge():
    result = SPLITTER.split("Let's think step by step.\n\nWarfarin is a vitamin K antagonist.\n\nSo the answer is B.",
                            "Which agent reverses warfarin?")
    assert [s.no_knowledge for s in result.steps] == [True, False, True]
