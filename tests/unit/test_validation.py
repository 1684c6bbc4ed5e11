"""Request validation: each bad-input class gives INVALID_ARGUMENT with a field violation."""

import pytest

from server.pipeline.errors import InvalidArgumentError
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
