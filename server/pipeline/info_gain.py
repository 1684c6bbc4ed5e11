"""InfoGain of one chain: per-step answer NLL L_i, gains g_i, and the paper formula."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from .chains import split_chain
from .deadline import Deadline
from .deps import PipelineDeps
from .errors import InvalidArgumentError
from .types import ChainStatus, InfoGainRequest, InfoGainResult, PrefixScores, SplitResult, Step, StepGain

PAPER_MIN_STEPS = 3


def render_context0(question: str, choices: Sequence[str]) -> str:
    """c_0: the question, then one "A. text" line per option."""
    if not choices:
        return question
    lines = [f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def choose_target(answer: str, gold_answer: str) -> tuple[str, str]:
    """("gold_answer" | "answer", text): the gold answer when given."""
    if gold_answer.strip():
        return "gold_answer", gold_answer.strip()
    if answer.strip():
        return "answer", answer.strip()
    raise InvalidArgumentError.single("answer", "InfoGain needs a target: send answer or gold_answer")


def _gains(nll: Sequence[float | None]) -> list[float | None]:
    return [
        None if nll[i - 1] is None or nll[i] is None else nll[i - 1] - nll[i]
        for i in range(1, len(nll))
    ]


async def _windowed_gains(estimator, c0: str, texts: Sequence[str], target: str, window: int, deadline: Deadline):
    """g_i = L(q + s_{j..i-1}) - L(q + s_{j..i}) with j = max(1, i - W); flags steps where j > 1."""
    gains: list[float | None] = []
    windowed: list[bool] = []
    prefill = calls = 0
    for i in range(1, len(texts) + 1):
        j = max(1, i - window)
        scores = await estimator.score_prefixes(c0, texts[j - 1:i], target, deadline)
        prefill += scores.prefill_tokens
        calls += scores.llm_calls
        before, after = scores.nll[-2], scores.nll[-1]
        gains.append(None if before is None or after is None else before - after)
        windowed.append(j > 1)
    return gains, windowed, prefill, calls


def _paper_value(ppl: Sequence[float | None], n: int) -> tuple[float | None, str]:
    if n < PAPER_MIN_STEPS:
        return None, f"the reference formula skips chains of <= {PAPER_MIN_STEPS - 1} steps"
    if any(p is None for p in ppl):
        return None, "a prefix did not fit the model's context"
    return sum(ppl[i - 1] - ppl[i] for i in range(1, n + 1)) / (n + 1), ""


async def score_info_gain(
    req: InfoGainRequest, deps: PipelineDeps, deadline: Deadline, split: SplitResult | None = None
) -> InfoGainResult:
    opts = req.options
    target_kind, target = choose_target(req.answer, req.gold_answer)
    if split is None:
        split = await split_chain(req.chain, deps)
    estimator = await deps.estimator(opts.estimator)
    if opts.paper and estimator.kind != "lm":
        raise InvalidArgumentError.single("options.mode", "paper mode needs a causal LM; the nli estimator has none")
    c0 = render_context0(req.chain.question, req.choices)
    texts = [s.text for s in split.steps]
    n = len(texts)

    scores: PrefixScores = await estimator.score_prefixes(c0, texts, target, deadline)
    nll = list(scores.nll)
    prefill, calls = scores.prefill_tokens, scores.llm_calls
    if opts.window:
        gains, windowed, extra_prefill, extra_calls = await _windowed_gains(
            estimator, c0, texts, target, opts.window, deadline)
        prefill += extra_prefill
        calls += extra_calls
    else:
        gains, windowed = _gains(nll), [False] * n

    unit = 1.0 / math.log(2) if opts.units == "bits" else 1.0
    gain_scale = unit / (scores.answer_tokens if opts.per_token and scores.answer_tokens > 0 else 1)

    ppl: list[float | None] = [None] * (n + 1)
    paper_value, paper_reason = None, ""
    if opts.paper:
        paper_texts = [s.knowledge or s.text for s in split.steps]
        ppl = list(await estimator.paper_perplexities(c0, paper_texts, target, deadline))
        paper_value, paper_reason = _paper_value(ppl, n)

    truncated = list(scores.truncated) or [False] * (n + 1)
    steps = [
        _step_gain(step, nll[i + 1], gains[i], scores, unit, gain_scale, windowed[i], truncated[i + 1], ppl[i + 1])
        for i, step in enumerate(split.steps)
    ]
    valid = [g for g in gains if g is not None]
    provenance = dataclasses.replace(deps.provenance, splitter=split.splitter, estimator=estimator.name)
    return InfoGainResult(
        chain_text=split.chain_text,
        steps=tuple(steps),
        nll_initial=None if nll[0] is None else nll[0] * unit,
        info_gain=sum(valid) / len(valid) * gain_scale if valid else None,
        info_gain_total=sum(valid) * gain_scale if valid else None,
        info_gain_paper=paper_value,
        info_gain_paper_reason=paper_reason,
        perplexity_paper_initial=ppl[0],
        target=target_kind,
        target_text=target,
        answer_tokens=scores.answer_tokens,
        units=opts.units,
        estimator=estimator.kind,
        prefill_tokens=prefill,
        status=ChainStatus.PARTIAL if len(valid) < n else ChainStatus.OK,
        llm_calls=calls,
        provenance=provenance,
    )


def _step_gain(step: Step, nll, gain, scores: PrefixScores, unit: float, gain_scale: float, windowed: bool,
               truncated: bool, ppl) -> StepGain:
    flags = []
    reason = ""
    if windowed:
        flags.append("windowed")
    if truncated:
        flags.append("truncated")
    if gain is None:
        flags.append("context_overflow")
        reason = scores.overflow_reason or "the prefix does not fit the model's context"
    tokens = scores.answer_tokens
    return StepGain(
        step=step,
        nll=None if nll is None else nll * unit,
        nll_per_token=None if nll is None or tokens <= 0 else nll * unit / tokens,
        gain=None if gain is None else gain * gain_scale,
        perplexity_paper=ppl,
        flags=tuple(flags),
        null_reason=reason,
    )
