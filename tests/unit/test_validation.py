"""Request validation: each bad-input class gives INVALID_ARGUMENT with a field violation."""

import pytest

from server.pipeline.errors import FieldViolation, InvalidArgumentError
from server.pipeline.types import ChainInput, ChainRequest, InfoGainOptions, InfoGainRequest, KnowledgeOptions
from server.pipeline.types import KnowledgeRequest, Passage
from server.pipeline.validation import Limits, validate_chain, validate_info_gain, validate_knowledge

LIMITS = Limits(max_reasoning_chars=100, max_steps=3, max_step_chars=40, max_context_passages=2,
                max_passage_chars=50, max_top_k=10, max_choices=3)


def _violations(call):
    with pytest.raises(InvalidArgumentError) as info:
        call()
    return {v.field for v in info.value.violations}


def _ki(chain=ChainInput(reasoning="Aspirin inhibits COX."), context=(), **options):
    return KnowledgeRequest(chain, tuple(context), KnowledgeOptions(**options))


@pytest.mark.parametrize("chain, field", [
    (ChainInput(), "reasoning"),
    (ChainInput(reasoning="   \n "), "reasoning"),
    (ChainInput(reasoning="a", steps=("b",)), "reasoning"),
    (ChainInput(reasoning="\u200b", steps=("b",)), "reasoning"),  # invisible, but sent: both
    (ChainInput(reasoning="x" * 101), "reasoning"),
    (ChainInput(steps=("a", "b", "c", "d")), "steps"),
    (ChainInput(steps=("a", "")), "steps[1]"),
    (ChainInput(steps=("y" * 41,)), "steps[0]"),
    (ChainInput(question="q" * 20_001, reasoning="a"), "question"),
])
def test_bad_chains(chain, field):
    assert field in _violations(lambda: validate_knowledge(_ki(chain), LIMITS))


def test_bad_knowledge_options_and_context():
    assert "options.top_k" in _violations(lambda: validate_knowledge(_ki(top_k=11), LIMITS))
    assert "context" in _violations(lambda: validate_knowledge(_ki(context=[Passage(f"p{i}", "t") for i in range(3)]), LIMITS))
    assert "context[0].text" in _violations(lambda: validate_knowledge(_ki(context=[Passage("p", " ")]), LIMITS))
    assert "context[1].id" in _violations(lambda: validate_knowledge(
        _ki(context=[Passage("p", "a"), Passage("p", "b")]), LIMITS))
    long_meta = Passage("p", "a", source="s" * 1_001, title="t" * 1_001)
    assert {"context[0].source", "context[0].title"} <= _violations(lambda: validate_knowledge(
        _ki(context=[long_meta]), LIMITS))
    with pytest.raises(InvalidArgumentError, match="give every passage an id, or none"):
        validate_knowledge(_ki(context=[Passage("context:1", "a"), Passage("context:1", "b")]), LIMITS)
    assert "options.use_knowledge_base" in _violations(lambda: validate_knowledge(
        _ki(use_knowledge_base=False), LIMITS))


def test_bad_info_gain_requests():
    chain = ChainInput(question="q", reasoning="a step.")
    assert "question" in _violations(lambda: validate_info_gain(
        InfoGainRequest(ChainInput(question=" ", reasoning="a step."), answer="a"), LIMITS))
    assert "answer" in _violations(lambda: validate_info_gain(InfoGainRequest(chain), LIMITS))
    assert "choices" in _violations(lambda: validate_info_gain(
        InfoGainRequest(chain, answer="a", choices=("1", "2", "3", "4")), LIMITS))
    assert "options.mode" in _violations(lambda: validate_info_gain(
        InfoGainRequest(chain, answer="a", options=InfoGainOptions(estimator="nli", paper=True)), LIMITS))


def test_all_violations_are_reported_together():
    request = ChainRequest(_ki(ChainInput(reasoning="x" * 101), top_k=99), InfoGainRequest(ChainInput(reasoning="x" * 101)))
    fields = _violations(lambda: validate_chain(request, LIMITS))
    assert {"reasoning", "knowledge_options.top_k", "answer"} <= fields


def test_valid_requests_pass():
    validate_knowledge(_ki(context=[Passage("p", "Aspirin inhibits cyclooxygenase.")], top_k=3), LIMITS)
    validate_info_gain(InfoGainRequest(ChainInput(question="q", steps=("a", "b")), gold_answer="g"), LIMITS)


def _messages(call):
    with pytest.raises(InvalidArgumentError) as info:
        call()
    return {v.field: v.description for v in info.value.violations}


def test_every_limit_violation_names_the_setting_that_raises_the_limit():
    from server.config import LimitsSettings

    chain = ChainInput(question="q" * 20_001, reasoning="x" * 101)
    messages = _messages(lambda: validate_chain(ChainRequest(
        _ki(chain, context=[Passage("p" * 300, "t" * 51, title="t" * 1_001, source="s" * 1_001)], top_k=11),
        InfoGainRequest(chain, answer="a" * 4_001, gold_answer="g" * 4_001, choices=("c" * 2_001,),
                        options=InfoGainOptions(window=1_001))), LIMITS))
    messages.update(_messages(lambda: validate_knowledge(_ki(ChainInput(steps=("a", "b", "c", "d"))), LIMITS)))
    messages.update(_messages(lambda: validate_knowledge(_ki(context=[Passage(f"p{i}", "t") for i in range(3)]),
                                                         LIMITS)))
    messages["steps[0]"] = _messages(lambda: validate_knowledge(_ki(ChainInput(steps=("y" * 41,))), LIMITS))["steps[0]"]
    messages["steps total"] = _messages(lambda: validate_knowledge(
        _ki(ChainInput(steps=("y" * 40, "y" * 40, "y" * 40))), LIMITS))["steps"]
    messages["choices"] = _messages(lambda: validate_info_gain(InfoGainRequest(
        ChainInput(question="q", reasoning="a"), answer="a", choices=("1", "2", "3", "4")), LIMITS))["choices"]
    expected = {
        "question": "MAX_QUESTION_CHARS", "reasoning": "MAX_REASONING_CHARS", "context[0].text": "MAX_PASSAGE_CHARS",
        "context[0].id": "MAX_ID_CHARS", "context[0].title": "MAX_PASSAGE_META_CHARS",
        "context[0].source": "MAX_PASSAGE_META_CHARS", "knowledge_options.top_k": "MAX_TOP_K",
        "answer": "MAX_ANSWER_CHARS", "gold_answer": "MAX_ANSWER_CHARS", "choices[0]": "MAX_CHOICE_CHARS",
        "info_gain_options.window": "MAX_WINDOW", "steps": "MAX_STEPS", "context": "MAX_CONTEXT_PASSAGES",
        "steps[0]": "MAX_STEP_CHARS", "steps total": "MAX_REASONING_CHARS", "choices": "MAX_CHOICES",
    }
    for field, name in expected.items():
        assert f"(KGV_LIMITS__{name})" in messages[field] or f"; KGV_LIMITS__{name})" in messages[field], \
            (field, messages[field])
        assert name.lower() in LimitsSettings.model_fields  # a setting that exists
    assert messages["reasoning"] == "is 101 characters long; the limit is 100 (KGV_LIMITS__MAX_REASONING_CHARS)"


async def test_limits_checked_after_splitting_name_their_setting():
    from server.pipeline.chains import split_chain
    from server.pipeline.deadline import Deadline
    from server.pipeline.deps import PipelineDeps
    from server.pipeline.errors import InvalidArgumentError
    from server.pipeline.runtime import Blocking
    from server.pipeline.splitter import RuleSplitter
    from server.pipeline.types import ChainInput

    async def splitter(name):
        return RuleSplitter()

    deps = PipelineDeps(limits=LIMITS, blocking=Blocking(None), splitter=splitter, judge=None, estimator=None,
                        knowledge_base=lambda: None, embedder=lambda: None)
    cases = {"Step one.\n\nStep two.\n\nStep three.\n\nStep four.": "KGV_LIMITS__MAX_STEPS",
             "word " * 15: "KGV_LIMITS__MAX_STEP_CHARS"}
    for text, variable in cases.items():
        with pytest.raises(InvalidArgumentError) as info:
            await split_chain(ChainInput(reasoning=text), deps, None, Deadline())
        assert f"({variable})" in info.value.message


def test_an_answer_naming_no_option_is_reported_with_the_other_violations():
    request = InfoGainRequest(ChainInput(question="q", reasoning="a step."), answer="(e)", choices=("1", "2", "3"),
                              options=InfoGainOptions(window=1_001))
    messages = _messages(lambda: validate_info_gain(request, LIMITS))
    assert messages["answer"] == "'(e)' names no option: 3 choices were sent (A to C)"
    assert "options.window" in messages
    validate_info_gain(InfoGainRequest(ChainInput(question="q", reasoning="a step."), answer="c",
                                       choices=("1", "2", "3")), LIMITS)


INVISIBLE = ["\u200b", "\x00", "\ufeff", "\u2060", "\u200b\u200b", " \u200b\t", "\u200d", "\u00ad", "\ufe0f",
             "\u3164", "\u2028", "\U000e0041"]


@pytest.mark.parametrize("text", INVISIBLE)
def test_text_without_a_visible_character_is_empty_wherever_emptiness_is_checked(text):
    """str.strip() keeps zero-width spaces, BOMs, word joiners and NUL: such a step was judged, and InfoGain scored a
    target of one zero-width space with knowledge_index_paper 1.0."""
    from server.pipeline.validation import has_visible_content

    assert not has_visible_content(text)
    fields = _violations(lambda: validate_chain(ChainRequest(
        _ki(ChainInput(question=text, steps=("Insulin lowers glucose.", text)),
            context=[Passage("p", text)]),
        InfoGainRequest(ChainInput(question=text, steps=("Insulin lowers glucose.", text)), answer=text,
                        gold_answer=text, choices=("insulin", text))), LIMITS))
    # a blank answer (" ", "\u2028": what str.strip() removes) is an absent one: then neither is a target
    expected = {"question", "steps[1]", "context[0].text", "choices[1]"}
    assert expected | ({"gold_answer"} if text.strip() else {"answer"}) <= fields
    assert "reasoning" in _violations(lambda: validate_knowledge(_ki(ChainInput(reasoning=text)), LIMITS))
    with pytest.raises(InvalidArgumentError, match="InfoGain needs the question|question: .*no visible"):
        validate_info_gain(InfoGainRequest(ChainInput(question=text, reasoning="a step."), answer="a"), LIMITS)


def test_text_with_a_visible_character_beside_invisible_ones_is_content():
    from server.pipeline.validation import has_visible_content

    for text in ("a\u200d", "\u200binsulin", "\U0001F600", "\u0301", "\ue000", "\u00a0x", "\u0661"):
        assert has_visible_content(text), repr(text)
    validate_chain(ChainRequest(
        _ki(ChainInput(question="Which\u200b drug?", steps=("Insulin\u200d lowers glucose.",)),
            context=[Passage("p", "\ufeffInsulin lowers glucose.")]),
        InfoGainRequest(ChainInput(question="Which\u200b drug?", steps=("Insulin\u200d lowers glucose.",)),
                        answer="insulin\u200d", choices=("insulin", "metformin"))), LIMITS)
    # blank answers still mean "absent": the gold answer is the target
    validate_info_gain(InfoGainRequest(ChainInput(question="q", steps=("a",)), answer="  ", gold_answer="g"), LIMITS)


def test_an_invisible_message_says_what_it_holds():
    messages = _messages(lambda: validate_knowledge(_ki(ChainInput(steps=("\u200b", " "))), LIMITS))
    assert messages["steps[0]"].startswith("has no visible characters") and messages["steps[1]"] == "is empty"


@pytest.mark.parametrize("choice", ["insulin\nB. aspirin", "insulin\r", "in\u2028sulin", "insulin\x85", "a\vb"])
def test_an_option_with_a_line_break_is_rejected(choice):
    """c_0 is the question plus one "A. text" line per option: a line break adds lines that read as options."""
    messages = _messages(lambda: validate_info_gain(InfoGainRequest(
        ChainInput(question="q", steps=("a",)), answer="a", choices=("metformin", choice)), LIMITS))
    assert messages["choices[1]"].startswith("must be one line")


@pytest.mark.parametrize("choices", [("A. aspirin", "B. insulin"), ("(a) aspirin", "(b) insulin", "(c) x"),
                                     ("A) aspirin", "B: insulin"), ("A.",)])
def test_options_that_all_carry_their_own_letter_label_are_rejected(choices):
    """"A. aspirin" would be listed in c_0 as "A. A. aspirin"."""
    messages = _messages(lambda: validate_info_gain(InfoGainRequest(
        ChainInput(question="q", steps=("a",)), answer="a", choices=choices), LIMITS))
    assert set(messages) == {f"choices[{i}]" for i in range(len(choices))}
    assert all("starts with its label" in m for m in messages.values())


@pytest.mark.parametrize("choices", [("A. baumannii", "insulin"), ("aspirin", "B. cereus"), ("B. aspirin", "A. x"),
                                     ("Aspirin.", "Be quiet"), ("A.aspirin", "B.insulin")])
def test_an_option_that_merely_starts_like_a_label_is_text(choices):
    validate_info_gain(InfoGainRequest(ChainInput(question="q", steps=("a",)), answer="a", choices=choices), LIMITS)


def test_a_violation_of_the_whole_message_reads_without_an_empty_field_name():
    error = InvalidArgumentError.single("", "the bytes are not a valid X message", reason="UNDECODABLE_MESSAGE")
    assert error.message == "invalid request: the bytes are not a valid X message"
    both = InvalidArgumentError([FieldViolation("", "bad bytes"), FieldViolation("id", "is required")])
    assert both.message == "invalid request: bad bytes; id: is required"


def test_a_blank_reasoning_beside_steps_is_absent_and_an_invisible_one_is_both():
    validate_knowledge(_ki(ChainInput(reasoning=" \n ", steps=("Insulin lowers glucose.",))), LIMITS)
    messages = _messages(lambda: validate_knowledge(_ki(ChainInput(reasoning="\u200b\u2060",
                                                                   steps=("Insulin lowers glucose.",))), LIMITS))
    assert messages == {"reasoning": "send either reasoning or steps, not both"}


def test_only_the_target_answer_is_checked_for_visible_text():
    """An invisible answer beside a gold answer is not scored (the gold answer is the target): it was refused."""
    chain = ChainInput(question="What reverses heparin?", steps=("Protamine binds heparin.",))
    validate_info_gain(InfoGainRequest(chain, answer="\u200b", gold_answer="Protamine"), LIMITS)
    messages = _messages(lambda: validate_info_gain(InfoGainRequest(chain, answer="Protamine", gold_answer="\u200b"),
                                                    LIMITS))
    assert set(messages) == {"gold_answer"} and messages["gold_answer"].startswith("has no visible characters")
    messages = _messages(lambda: validate_info_gain(InfoGainRequest(chain, answer="\u200b"), LIMITS))
    assert set(messages) == {"answer"}
