"""The InfoGain pipeline core: gains, windows, units, overflow, zero probability and paper mode, on fake estimators."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import pytest

from server.pipeline.types import PrefixScores
from server.backends.ports import InfoGainEstimator
from server.pipeline import scoring
from server.pipeline.deadline import NO_DEADLINE
from server.pipeline.deps import PipelineDeps
from server.pipeline.errors import InvalidArgumentError
from server.pipeline.info_gain import render_context0, score_info_gain
from server.pipeline.runtime import Blocking
from server.pipeline.splitter import RuleSplitter
from server.pipeline.types import ChainInput, ChainStatus, InfoGainOptions, InfoGainRequest, SplitResult, Step
from server.pipeline.validation import Limits

ZERO = "the fake LM gives the answer zero probability"


def fake_nll(context: str) -> float:
    """A context-dependent L(c): "good" makes the answer likelier, "bad" less likely."""
    return 5.0 - 0.75 * context.count("good") + 0.5 * context.count("bad") + 0.01 * len(context)


def fake_ppl(text: str) -> float:
    return math.exp(fake_nll(text) / 4)


@dataclass
class FakeEstimator:
    """Scores contexts with fake_nll; contexts over max_chars overflow; a step saying "zero" has zero probability."""

    kind: str = "lm"
    name: str = "fake:lm"
    max_chars: int = 10_000
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    paper_calls: list[tuple[str, ...]] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    scored: int = 0  # contexts scored

    def _contexts(self, context0, steps):
        out = [context0]
        for s in steps:
            out.append(out[-1] + "\n" + s)
        return out

    async def score_prefixes(self, context0, steps, target, deadline, last=None):
        self.calls.append((context0, tuple(steps)))
        self.targets.append(target)
        self.scored += len(steps) + 1 if last is None else last
        nll, why = [], []
        for i, c in enumerate(self._contexts(context0, steps)):
            if len(c) > self.max_chars or (nll and nll[-1] is None and not why[-1]):
                nll.append(None), why.append("")
            elif c.endswith("zero"):
                nll.append(None), why.append(ZERO)
            else:
                nll.append(fake_nll(c)), why.append("")
        if last is not None:
            nll, why = nll[-last:], why[-last:]
        return PrefixScores(nll=tuple(nll), answer_tokens=len(target.split()), prefill_tokens=len(steps) + 1,
                              llm_calls=1, overflow_reason="too long for the fake" if None in nll else "",
                              null_reasons=tuple(why))

    async def paper_perplexities(self, context0, steps, target, deadline):
        self.paper_calls.append(tuple(steps))
        return [fake_ppl(c + " Answer: " + target) for c in self._contexts(context0, steps)]

    async def ready(self):
        return True


class FakeDecomposer:
    """A splitter that returns decomposer-style steps (planning / knowledge fields filled)."""

    name = "llm/1"

    def split_steps(self, steps, question=""):
        return self.split("\n".join(steps), question)

    def split(self, text, question=""):
        parts, at = [], 0
        for i, line in enumerate(text.split("\n")):
            parts.append(Step(i, line, at, at + len(line), planning="plan", knowledge="" if i == 1 else f"fact {i}"))
            at += len(line) + 1
        return SplitResult(text, tuple(parts), self.name, llm_calls=1)


def make_deps(estimator, splitter=None) -> PipelineDeps:
    splitter = splitter or RuleSplitter()

    async def get_splitter(name):
        return splitter

    async def get_estimator(name):
        return estimator

    async def no_judge(name):
        raise AssertionError("InfoGain needs no judge")

    return PipelineDeps(limits=Limits(), blocking=Blocking(None), splitter=get_splitter, judge=no_judge,
                        estimator=get_estimator, knowledge_base=lambda: None, embedder=lambda: None)


def request(steps, answer="insulin", gold="", choices=(), **options) -> InfoGainRequest:
    return InfoGainRequest(ChainInput(question="Q?", steps=tuple(steps)), answer=answer, gold_answer=gold,
                           choices=tuple(choices), options=InfoGainOptions(**options))


def contexts(steps, c0="Q?"):
    out = [c0]
    for s in steps:
        out.append(out[-1] + "\n" + s)
    return out


STEPS = ["a good start", "bad news", "good and good", "plain", "good"]


def test_fake_is_a_port_implementation():
    assert isinstance(FakeEstimator(), InfoGainEstimator)


async def test_gains_are_nll_differences_and_info_gain_is_their_mean():
    result = await score_info_gain(request(STEPS, gold="metformin"), make_deps(FakeEstimator()), NO_DEADLINE)
    L = [fake_nll(c) for c in contexts(STEPS)]
    assert result.target == "gold_answer" and result.target_text == "metformin"
    assert result.nll_initial == pytest.approx(L[0])
    assert [s.nll for s in result.steps] == pytest.approx(L[1:])
    assert [s.gain for s in result.steps] == pytest.approx([L[i - 1] - L[i] for i in range(1, 6)])
    assert result.info_gain == pytest.approx((L[0] - L[5]) / 5)
    assert result.info_gain_total == pytest.approx(L[0] - L[5])
    assert result.status == ChainStatus.OK and all(not s.flags and not s.null_reason for s in result.steps)
    assert result.steps[1].gain < 0 < result.steps[0].gain  # "bad" hurt, "good" helped
    assert result.estimator == "lm" and result.provenance.estimator == "fake:lm"


async def test_bits_and_per_token_normalisation():
    deps = make_deps(FakeEstimator())
    nats = await score_info_gain(request(STEPS, answer="two words"), deps, NO_DEADLINE)
    bits = await score_info_gain(request(STEPS, answer="two words", units="bits"), deps, NO_DEADLINE)
    per_token = await score_info_gain(request(STEPS, answer="two words", per_token=True), deps, NO_DEADLINE)
    assert bits.info_gain == pytest.approx(nats.info_gain / math.log(2))
    assert [s.nll for s in bits.steps] == pytest.approx([s.nll / math.log(2) for s in nats.steps])
    assert per_token.info_gain == pytest.approx(nats.info_gain / 2)
    assert [s.nll_per_token for s in nats.steps] == pytest.approx([s.nll / 2 for s in nats.steps])
    assert bits.units == "bits" and nats.answer_tokens == 2


@pytest.mark.parametrize("kind", ["lm", "nli"])
async def test_window_keeps_contexts_nested_over_the_last_steps(kind):
    estimator = FakeEstimator(kind=kind)
    steps = STEPS + ["bad", "good good"]
    result = await score_info_gain(request(steps, window=2), make_deps(estimator), NO_DEADLINE)
    for i in range(1, len(steps) + 1):
        j = max(1, i - 2)
        before = fake_nll("\n".join(["Q?", *steps[j - 1:i - 1]]))
        after = fake_nll("\n".join(["Q?", *steps[j - 1:i]]))
        step = result.steps[i - 1]
        assert step.gain == pytest.approx(before - after)
        assert step.flags == (("windowed",) if j > 1 else ())
    gains = [s.gain for s in result.steps]
    assert result.info_gain == pytest.approx(sum(gains) / len(gains))
    window_calls = estimator.calls[1:]
    assert len(window_calls) == len(steps) - 3
    if kind == "lm":  # the window's first steps are folded into the context: two prefixes a call
        assert all(len(call_steps) == 1 for _, call_steps in window_calls)
    # two contexts a window either way, not all W + 1 (256 steps with W=128 scored 64x the pairs)
    assert estimator.scored == len(steps) + 1 + 2 * len(window_calls)


async def test_overflow_nulls_later_gains_with_flag_and_reason():
    L = [fake_nll(c) for c in contexts(STEPS)]
    limit = len(contexts(STEPS)[3])  # c_0..c_3 fit
    result = await score_info_gain(request(STEPS), make_deps(FakeEstimator(max_chars=limit)), NO_DEADLINE)
    gains = [s.gain for s in result.steps]
    assert gains[:3] == pytest.approx([L[0] - L[1], L[1] - L[2], L[2] - L[3]]) and gains[3:] == [None, None]
    assert [s.nll for s in result.steps][3:] == [None, None]
    assert result.steps[4].flags == ("context_overflow",) and result.steps[4].null_reason == "too long for the fake"
    assert result.info_gain == pytest.approx((L[0] - L[3]) / 3)
    assert result.info_gain_total == pytest.approx(L[0] - L[3])
    assert result.status == ChainStatus.PARTIAL


async def test_zero_probability_nulls_both_adjacent_gains_without_overflow_flag():
    steps = ["good", "then zero", "good"]
    result = await score_info_gain(request(steps), make_deps(FakeEstimator()), NO_DEADLINE)
    assert result.steps[1].nll is None
    assert [s.gain for s in result.steps][1:] == [None, None]
    assert result.steps[1].null_reason == ZERO and result.steps[2].null_reason == ZERO
    assert all("context_overflow" not in s.flags for s in result.steps)
    assert result.info_gain == pytest.approx(result.steps[0].gain)


async def test_paper_mode_is_the_reference_formula():
    estimator = FakeEstimator()
    result = await score_info_gain(request(STEPS, paper=True), make_deps(estimator), NO_DEADLINE)
    ppl = [fake_ppl(c + " Answer: insulin") for c in contexts(STEPS)]
    assert result.info_gain_paper == pytest.approx(sum(ppl[i - 1] - ppl[i] for i in range(1, 6)) / 6)
    assert result.perplexity_paper_initial == pytest.approx(ppl[0])
    assert [s.perplexity_paper for s in result.steps] == pytest.approx(ppl[1:])
    assert estimator.paper_calls == [tuple(STEPS)]


async def test_paper_mode_skips_chains_of_two_steps_with_a_reason():
    result = await score_info_gain(request(STEPS[:2], paper=True), make_deps(FakeEstimator()), NO_DEADLINE)
    assert result.info_gain_paper is None and "<= 2 steps" in result.info_gain_paper_reason
    assert all(s.perplexity_paper is not None for s in result.steps)
    assert result.info_gain is not None


async def test_paper_mode_uses_the_decomposers_knowledge_field():
    estimator = FakeEstimator()
    deps = make_deps(estimator, FakeDecomposer())
    await score_info_gain(request(["x one", "y two", "z three"], paper=True), deps, NO_DEADLINE)
    assert estimator.paper_calls == [("fact 0", "", "fact 2")]
    assert estimator.calls[0][1] == ("x one", "y two", "z three")  # answer-token mode keeps the step text


async def test_paper_mode_needs_a_causal_lm():
    with pytest.raises(InvalidArgumentError) as info:
        await score_info_gain(request(STEPS, paper=True), make_deps(FakeEstimator(kind="nli")), NO_DEADLINE)
    assert info.value.violations[0].field == "options.mode"


async def test_empty_target_and_empty_chain_are_invalid():
    deps = make_deps(FakeEstimator())
    with pytest.raises(InvalidArgumentError, match="target"):
        await scoring.info_gain(request(STEPS, answer="  "), deps, NO_DEADLINE)
    empty = InfoGainRequest(ChainInput(question="Q?", reasoning="   "), answer="x")
    with pytest.raises(InvalidArgumentError):
        await scoring.info_gain(empty, deps, NO_DEADLINE)


async def test_options_render_into_the_first_context():
    estimator = FakeEstimator()
    await score_info_gain(request(["s"], choices=["aspirin", "insulin"]), make_deps(estimator), NO_DEADLINE)
    assert estimator.calls[0][0] == "Q?\nA. aspirin\nB. insulin" == render_context0("Q?", ["aspirin", "insulin"])


@pytest.mark.parametrize("answer", ["B", "b", "B.", "(B)", "B)", " B: "])
async def test_an_answer_naming_an_option_by_its_letter_targets_the_option_text(answer):
    estimator = FakeEstimator()
    result = await score_info_gain(request(["s"], answer=answer, choices=["aspirin", "insulin"]),
                                   make_deps(estimator), NO_DEADLINE)
    assert result.target_text == "insulin" and estimator.targets[0] == "insulin"


@pytest.mark.parametrize("answer,choices,target", [
    ("B", [], "B"),                          # no options: the letter is the answer as sent
    ("insulin", ["aspirin", "insulin"], "insulin"),
    ("X", ["X", "Y"], "X"),                  # the text of an option, not a letter past the options
    ("B. insulin", ["aspirin", "insulin"], "B. insulin"),
])
async def test_other_answers_are_targets_as_sent(answer, choices, target):
    estimator = FakeEstimator()
    result = await score_info_gain(request(["s"], answer=answer, choices=choices), make_deps(estimator), NO_DEADLINE)
    assert result.target_text == target and estimator.targets[0] == target


async def test_a_letter_past_the_last_option_is_invalid():
    with pytest.raises(InvalidArgumentError, match="'C' names no option: 2 choices were sent .A to B.") as info:
        await scoring.info_gain(request(["s"], answer="x", gold="C", choices=["aspirin", "insulin"]),
                                make_deps(FakeEstimator()), NO_DEADLINE)
    assert info.value.violations[0].field == "gold_answer"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_value_from_the_estimator_is_a_null_gain_with_its_reason_never_nan(bad):
    class Broken(FakeEstimator):
        async def score_prefixes(self, context0, steps, target, deadline, last=None):
            scores = await super().score_prefixes(context0, steps, target, deadline, last)
            return dataclasses.replace(scores, nll=tuple(bad if i == 2 else v for i, v in enumerate(scores.nll)))

        async def paper_perplexities(self, context0, steps, target, deadline):
            return [bad if i == 2 else p for i, p in enumerate(await super().paper_perplexities(
                context0, steps, target, deadline))]

    result = await score_info_gain(request(STEPS, paper=True), make_deps(Broken()), NO_DEADLINE)
    gains = [s.gain for s in result.steps]
    assert gains[1] is None and gains[2] is None and all(g is not None for i, g in enumerate(gains) if i not in (1, 2))
    assert result.steps[1].nll is None and "non-finite" in result.steps[1].null_reason
    assert all(math.isfinite(v) for v in (result.info_gain, result.info_gain_total))
    assert result.info_gain_paper is None


async def test_llm_calls_count_the_decomposer_call_of_the_split_made_for_infogain():
    """ScoreInfoGain and an InfoGain-only ScoreChain reported the LM's calls only, not the decomposer's."""
    from server.pipeline.types import ChainRequest

    req = InfoGainRequest(ChainInput(question="Q?", reasoning="a good start\nbad news"), answer="insulin")
    deps = make_deps(FakeEstimator(), FakeDecomposer())
    assert (await score_info_gain(req, deps, NO_DEADLINE)).llm_calls == 2  # one LM call, one decomposer call
    assert (await scoring.chain(ChainRequest(knowledge=None, info_gain=req), deps, NO_DEADLINE)).info_gain.llm_calls == 2
    split = await deps.splitter("")
    shared = split.split("a good start\nbad news")
    assert (await score_info_gain(req, deps, NO_DEADLINE, shared, count_split=False)).llm_calls == 1


async def test_an_unusable_lm_answer_nulls_those_gains_with_the_reason_and_the_chain_is_partial():
    """ARCHITECTURE: a reachable backend's unusable output is never a score, and fails only what it was for (a
    judge: that claim's ERROR verdict; the LM: those gains). The whole call failed INTERNAL, and a ScoreChain lost
    its KI results with it."""
    from server.pipeline.errors import BackendResponseError
    from server.pipeline.types import ChainRequest

    class Garbled(FakeEstimator):
        def __init__(self, bad_window_only=False):
            super().__init__()
            self.bad_window_only = bad_window_only

        async def score_prefixes(self, context0, steps, target, deadline, last=None):
            if not self.bad_window_only or "bad news" in context0:
                raise BackendResponseError("vLLM returned an impossible log-probability 2.5 on /v1/completions")
            return await super().score_prefixes(context0, steps, target, deadline, last)

        async def paper_perplexities(self, context0, steps, target, deadline):
            raise BackendResponseError("vLLM returned non-JSON on /v1/completions (HTTP 200)")

    result = await score_info_gain(request(STEPS, paper=True), make_deps(Garbled()), NO_DEADLINE)
    assert result.status is ChainStatus.PARTIAL
    assert all(s.gain is None and s.nll is None for s in result.steps)
    assert all("unusable" in s.null_reason and "impossible log-probability" in s.null_reason for s in result.steps)
    assert result.info_gain is None and result.info_gain_total is None and result.nll_initial is None
    assert result.info_gain_paper is None and "non-JSON" in result.info_gain_paper_reason
    assert all("context_overflow" not in s.flags for s in result.steps)

    # windows: only the window whose call was garbled loses its gain; the others are scored
    steps = ["good one", "bad news", "plain two", "good three", "plain four"]
    windowed = await score_info_gain(request(steps, window=1), make_deps(Garbled(bad_window_only=True)),
                                     NO_DEADLINE)
    # the full pass (c_0 = "Q?") is scored; the window of step 3 (its context holds "bad news") is garbled
    assert [s.gain is not None for s in windowed.steps[:2]] == [True, True]
    assert windowed.status is ChainStatus.PARTIAL
    by_window = {s.step.index: s for s in windowed.steps}
    assert by_window[2].gain is None and "unusable" in by_window[2].null_reason  # window j=2: context has "bad news"
    assert by_window[3].gain is not None and "windowed" in by_window[3].flags

    # a ScoreChain answers (it raised INTERNAL)
    req = request(STEPS)
    out = await scoring.chain(ChainRequest(knowledge=None, info_gain=req), make_deps(Garbled()), NO_DEADLINE)
    assert out.info_gain.status is ChainStatus.PARTIAL


async def test_per_token_gains_keep_their_unit_when_only_the_full_pass_was_unusable():
    """The full pass unusable, the windows scored: their per-token gains divide by the answer's tokens, as told by
    the windows' calls (the unusable pass knows none; dividing by 1 gave whole-answer gains as per-token)."""
    from server.pipeline.errors import BackendResponseError

    class FullPassGarbled(FakeEstimator):
        async def score_prefixes(self, context0, steps, target, deadline, last=None):
            if context0 == "Q?":
                raise BackendResponseError("vLLM returned non-JSON on /v1/completions (HTTP 200)")
            return await super().score_prefixes(context0, steps, target, deadline, last)

    steps = ["good one", "bad news", "plain two", "good three"]
    whole = await score_info_gain(request(steps, answer="two words", window=1), make_deps(FullPassGarbled()),
                                  NO_DEADLINE)
    per_token = await score_info_gain(request(steps, answer="two words", window=1, per_token=True),
                                      make_deps(FullPassGarbled()), NO_DEADLINE)
    assert per_token.answer_tokens == 2
    scored = [i for i, s in enumerate(whole.steps) if s.gain is not None]
    assert scored == [2, 3]  # the windows; steps 0 and 1 needed the unusable full pass
    for i in scored:
        assert per_token.steps[i].gain == pytest.approx(whole.steps[i].gain / 2)
