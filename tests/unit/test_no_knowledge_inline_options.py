"""A question that carries its options inline (MedQA's text, "Answer Choices: (A) …", an "Options:" block) hid the
facts that decide the answer: "The most accurate diagnostic test for polymyositis is muscle biopsy." restated the
question once "Muscle biopsy" was an option in it. Options sent as `choices` were never read by the restatement
rule; written inline they are left out of it too, when they name things (sentences and numbers stay: restating
them is talk about the case, arithmetic on them the problem's own)."""

from __future__ import annotations

import pytest

from server.pipeline.no_knowledge import is_no_knowledge, strip_inline_options

STEM = ("A 45-year-old woman has proximal weakness and an elevated creatine kinase. Figure A. shows her "
        "thigh. Which of the following is the most accurate diagnostic test for polymyositis?")
OPTIONS = ["Muscle biopsy", "Electromyography", "Anti-Jo-1 antibodies", "Serum aldolase", "MRI of the thigh"]
FACT = "The most accurate diagnostic test for polymyositis is muscle biopsy."


def lines(options):
    return STEM + "\n" + "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))


def inline(options):
    return STEM + " " + " ".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(options))


def parenthesised(options):
    return STEM + "\nAnswer Choices: " + " ".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(options))


@pytest.mark.parametrize("style", [lines, inline, parenthesised])
def test_a_fact_naming_an_inline_option_is_judged_as_with_separate_choices(style):
    assert not is_no_knowledge(FACT, STEM)  # the question alone, options sent as `choices`
    assert not is_no_knowledge(FACT, style(OPTIONS))
    assert strip_inline_options(style(OPTIONS)).rstrip() == STEM
    assert is_no_knowledge("The patient is a 45-year-old woman with proximal weakness.", style(OPTIONS))


def test_sentence_options_stay_in_the_question_restating_them_is_talk_about_the_case():
    puzzle = ("The following statements each describe a set of five objects arranged in a fixed order.\n"
              "- In an antique car show, there are five vehicles: a truck, a station wagon, a motorcyle, a "
              "convertible, and a hatchback.\n- The station wagon is the second-newest.\n"
              "Q: Given the above statements, which of the following is correct?\nOptions:\n"
              "(A) The truck is the newest.\n(B) The station wagon is the newest.\n(C) The motorcyle is the newest.\n")
    assert strip_inline_options(puzzle) == puzzle
    assert is_no_knowledge("According to this ordering, the newest vehicle is the motorcyle.", puzzle)


@pytest.mark.parametrize("question", [
    "Which number rounds to 40? Answer Choices: (A) 43 (B) 38 (C) 45 (D) 35",
    "Which is larger?\n(A) $14.45001$\n(B) $14.44999$",
    "Deficiency of vitamin A. B. cereus causes what?",  # letters after a word, not a list
    "Which of A. and B. is right?",
])
def test_numbers_formulas_and_lone_letters_are_not_taken_for_named_options(question):
    assert strip_inline_options(question) == question


@pytest.mark.parametrize("question, kept", [
    # labels in prose, the question after them
    ("Structure A: aorta Structure B: vena cava Structure C: pulmonary trunk\nWhich carries deoxygenated blood?",
     "Which carries deoxygenated blood?"),
    ("Consider: A. insulin B. metformin C. glipizide. Which lowers weight most?", "Which lowers weight most?"),
    # an "A:" in the stem does not join the list below it
    ("A boy with hepatitis A: management options\nA. Rest\nB. Fluids\nC. Antivirals", "A boy with hepatitis A:"),
])
def test_only_the_option_list_is_left_out_not_the_question_around_it(question, kept):
    assert kept in strip_inline_options(question)


def test_an_option_list_without_an_end_in_sight_is_prose():
    question = "Which? A. x B. y C. " + "z" * 400
    assert strip_inline_options(question) == question


@pytest.mark.parametrize("options", [
    ["Electromyography", "Muscle biopsy", "Serum aldolase", "E. coli stool culture"],  # a letter mark in an option
    ["H. pylori serology", "C. difficile toxin", "Muscle biopsy"],
])
def test_a_letter_and_dot_inside_an_option_is_option_text(options):
    assert not is_no_knowledge(FACT, lines(options))
    assert strip_inline_options(lines(options)).rstrip() == STEM


@pytest.mark.parametrize("run_on", range(295, 303))
def test_where_a_list_ends_does_not_depend_on_where_a_window_of_characters_ends(run_on):
    """The last option's end is looked for within MAX_OPTION_CHARS; a period falling on that window's last
    character was taken for the end of the question, and the prose before it for an option."""
    question = "Which drug? A. Warfarin B. Heparin C. " + "a" * run_on + ". more words follow here and there"
    assert strip_inline_options(question) == question  # the last "option" runs on: prose


def test_a_label_padded_with_spaces_is_read_past():
    question = STEM + "\nOptions" + " " * 5000 + "\n" + "\n".join(f"{chr(65 + i)}. {o}" for i, o in enumerate(OPTIONS))
    assert strip_inline_options(question).rstrip() == STEM
