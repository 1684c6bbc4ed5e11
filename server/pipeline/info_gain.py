"""InfoGain of one chain: per-step answer NLL L_i, gains g_i, windows, and the paper formula."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Sequence

from .chains import split_chain
from .deadline import Deadline
from .deps import PipelineDeps
from .errors import BackendResponseError, InvalidArgumentError
from .validation import named_option, option_violation
from .types import ChainStatus, InfoGainRequest, InfoGainResult, PrefixScores, SplitResult, Step, StepGain

PAPER_MIN_STEPS = 3
OVERFLOW = "the prefix does not fit the model's context"
# What to do about an overflow: without a window, use one (the LM estimator's reason ends with this advice); with
# one, a smaller one (the advice to "try the window option" was given to requests that had a window).
NO_WINDOW_ADVICE = "InfoGain covers the longest prefix of steps that fits; try the window option"
WINDOW_ADVICE = "with window {}, the window's steps and this one do not fit either; try a smaller window"
# Window 1 is the smallest: the question, the step before and this one are all a gain can be scored on.
WINDOW_ONE_ADVICE = ("with window 1, the question, the step before and this one do not fit either: only a model "
                     "with a longer context can score this step")
NON_FINITE = "the estimator returned a non-finite value for this prefix (NaN or infinity): a numerical failure"
UNUSABLE = "the language model's answer was unusable, so {} no score: {}"
log = logging.getLogger(__name__)


def _unusable(exc: BackendResponseError, count: int) -> PrefixScores:
    """Null L_i for `count` prefixes whose scoring call the LM answered unusably, each with the reason: as a judge's
    unusable answer makes that claim ERROR (never a score), the LM's makes these gains null and the chain partial,
    and the rest of the request (KI of a ScoreChain, other windows) stands."""
    log.warning("InfoGain: %s", exc)
    reason = UNUSABLE.format("this prefix has", exc)
    return PrefixScores(nll=(None,) * count, answer_tokens=0, null_reasons=(reason,) * count)


async def _scored(estimator, c0: str, texts: Sequence[str], target: str, deadline: Deadline,
                  last: int | None = None) -> PrefixScores:
    try:
        if last is None:
            return _finite(await estimator.score_prefixes(c0, texts, target, deadline))
        return _finite(await estimator.score_prefixes(c0, texts, target, deadline, last=last))
    except BackendResponseError as exc:
        return _unusable(exc, len(texts) + 1 if last is None else min(last, len(texts) + 1))


async def gather_or_cancel(*aws):
    """asyncio.gather that cancels the other awaitables as soon as one fails, and waits until they have stopped.

    A plain gather leaves them running: one bad answer among an InfoGain call's hundreds of vLLM requests (or
    windows queued for the local LM) returned the error while the rest kept going for nobody, holding the
    backend's concurrency slots."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def render_context0(question: str, choices: Sequence[str]) -> str:
    """c_0: the question, then one "A. text" line per option."""
    if not choices:
        return question
    lines = [f"{chr(ord('A') + i)}. {choice}" for i, choice in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def choose_target(answer: str, gold_answer: str, choices: Sequence[str] = ()) -> tuple[str, str]:
    """("gold_answer" | "answer", A): the gold answer when given, else the answer.

    With options, A is the option's text: an answer that only names an option by its letter ("B", "(b)",
    "B.") is replaced by that option's text, as c_0 lists it."""
    kind = "gold_answer" if gold_answer.strip() else "answer"
    text = (gold_answer if kind == "gold_answer" else answer).strip()
    if not text:
        raise InvalidArgumentError.single("answer", "InfoGain needs a target: send answer or gold_answer")
    if (violation := option_violation(kind, text, choices)) is not None:
        raise InvalidArgumentError([violation])
    index = named_option(text, choices)
    return kind, text if index is None else choices[index].strip()


def paper_texts(split: SplitResult) -> list[str]:
    """Step texts of paper mode: the decomposer's `knowledge` field when the LLM decomposer produced the steps."""
    decomposed = split.splitter.startswith("llm") or any(s.knowledge or s.planning for s in split.steps)
    return [s.knowledge if decomposed else s.text for s in split.steps]


@dataclass
class _Gains:
    """g_1..g_n with, for each null one, why, and whether the cause is a context overflow."""

    gains: list[float | None]
    reasons: list[str]
    overflow: list[bool]
    windowed: list[bool]
    prefill: int = 0
    calls: int = 0
    answer_tokens: int = 0  # told by a window's call (the full pass may have been unusable)
    # per windowed step: whether the window's longer context lost text (the nli estimator's fitting); a windowed
    # gain is measured on the window, not on the full prefix, whose truncation said nothing of it
    window_truncated: dict[int, bool] = dataclasses.field(default_factory=dict)


def _finite(scores: PrefixScores) -> PrefixScores:
    """The scores with every non-finite L_i (NaN or infinity from a backend) made null with its reason: a
    numerical failure is never passed on as a gain of NaN or infinity."""
    bad = [i for i, value in enumerate(scores.nll) if value is not None and not math.isfinite(value)]
    if not bad:
        return scores
    reasons = list(scores.null_reasons) + [""] * (len(scores.nll) - len(scores.null_reasons))
    nll = list(scores.nll)
    for i in bad:
        nll[i], reasons[i] = None, NON_FINITE
    return dataclasses.replace(scores, nll=tuple(nll), null_reasons=tuple(reasons))


def _prefix_nulls(scores: PrefixScores, window: int = 0) -> tuple[list[str], list[bool]]:
    """Per prefix: why its L_i is null ("" when set), and whether that is an overflow."""
    specific = scores.null_reasons
    overflow_reason = scores.overflow_reason or OVERFLOW
    if window:
        advice = WINDOW_ONE_ADVICE if window == 1 else WINDOW_ADVICE.format(window)
        overflow_reason = overflow_reason.replace(f"({NO_WINDOW_ADVICE})", f"({advice})")
    reasons, overflow = [], []
    for i, value in enumerate(scores.nll):
        own = specific[i] if i < len(specific) else ""
        reasons.append("" if value is not None else own or overflow_reason)
        overflow.append(value is None and not own)
    return reasons, overflow


def _pair_gain(scores: PrefixScores, before: int, after: int, window: int = 0) -> tuple[float | None, str, bool]:
    reasons, overflow = _prefix_nulls(scores, window)
    for i in (before, after):
        if scores.nll[i] is None:
            return None, reasons[i], overflow[i]
    return scores.nll[before] - scores.nll[after], "", False


def _full_gains(scores: PrefixScores, n: int, window: int = 0) -> _Gains:
    pairs = [_pair_gain(scores, i - 1, i, window) for i in range(1, n + 1)]
    return _Gains([g for g, _, _ in pairs], [r for _, r, _ in pairs], [o for _, _, o in pairs], [False] * n)


async def _windowed(estimator, c0: str, texts: Sequence[str], window: int, target: str, full: _Gains,
                    deadline: Deadline) -> _Gains:
    """g_i = L(q + s_{j..i-1}) - L(q + s_{j..i}) with j = max(1, i - W); steps with j = 1 keep the full gains.

    For an LM the window's first steps are folded into the context string (the
    same text), so each window costs two prefixes; the NLI proxy keeps its own
    truncation rule (question first), so it gets the steps separately.
    """
    out = dataclasses.replace(full, gains=list(full.gains), reasons=list(full.reasons),
                              overflow=list(full.overflow), windowed=list(full.windowed),
                              window_truncated=dict(full.window_truncated))
    todo = [i for i in range(1, len(texts) + 1) if i - window > 1]

    async def one(i: int) -> PrefixScores:
        j = i - window
        if estimator.kind == "lm":
            return await _scored(estimator, "\n".join([c0, *texts[j - 1:i - 1]]), [texts[i - 1]], target,
                                 deadline)
        return await _scored(estimator, c0, texts[j - 1:i], target, deadline, last=2)  # not all W + 1

    # Concurrent calls let a local LM pack several windows into one pass.
    results = await gather_or_cancel(*(one(i) for i in todo))
    for i, scores in zip(todo, results):
        k = len(scores.nll) - 1
        out.gains[i - 1], out.reasons[i - 1], out.overflow[i - 1] = _pair_gain(scores, k - 1, k, window)
        out.windowed[i - 1] = True
        out.window_truncated[i - 1] = bool(scores.truncated and scores.truncated[k])
        out.prefill += scores.prefill_tokens
        out.calls += scores.llm_calls
        out.answer_tokens = out.answer_tokens or scores.answer_tokens
    return out


def _paper_value(ppl: Sequence[float | None], n: int) -> tuple[float | None, str]:
    if n < PAPER_MIN_STEPS:
        return None, f"the reference formula skips chains of <= {PAPER_MIN_STEPS - 1} steps"
    if any(p is None for p in ppl):
        return None, "a perplexity is undefined: a prefix did not fit the model's context or had zero probability"
    return sum(ppl[i - 1] - ppl[i] for i in range(1, n + 1)) / (n + 1), ""


async def score_info_gain(
    req: InfoGainRequest, deps: PipelineDeps, deadline: Deadline, split: SplitResult | None = None,
    options_field: str = "options", count_split: bool | None = None,
) -> InfoGainResult:
    """options_field: the request field that holds req.options (ScoreChain: info_gain_options), for errors.
    count_split: whether llm_calls includes the LLM calls of the split (an LLM decomposer); by default when the
    split is made here. ScoreChain counts a shared split once, in the KI result when there is one."""
    if count_split is None:
        count_split = split is None
    opts = req.options
    target_kind, target = choose_target(req.answer, req.gold_answer, req.choices)
    # The estimator and what it can do are settled before the split: an LLM decomposer's call (seconds, tokens)
    # was spent on a request then refused for its options or for an estimator the server does not have.
    estimator = await deps.estimator(opts.estimator)
    if opts.paper and estimator.kind != "lm":
        raise InvalidArgumentError.single(f"{options_field}.mode",
                                          "paper mode needs a causal LM; the nli estimator has none")
    if opts.per_token and estimator.kind != "lm":
        raise InvalidArgumentError.single(f"{options_field}.per_token",
                                          "per-token gains need a causal LM's answer tokens; the nli estimator has none")
    if split is None:
        split = await split_chain(req.chain, deps, opts.splitter, deadline)
    c0 = render_context0(req.chain.question, req.choices)
    texts = [s.text for s in split.steps]
    n = len(texts)

    scores: PrefixScores = await _scored(estimator, c0, texts, target, deadline)
    nll = list(scores.nll)
    gains = _full_gains(scores, n, opts.window)
    if opts.window:
        gains = await _windowed(estimator, c0, texts, opts.window, target, gains, deadline)

    unit = 1.0 / math.log(2) if opts.units == "bits" else 1.0
    # the answer's token count, also when the full pass was unusable and a window's call told it
    tokens = scores.answer_tokens or gains.answer_tokens
    gain_scale = unit / (tokens if opts.per_token and tokens > 0 else 1)

    ppl: list[float | None] = [None] * (n + 1)
    paper_value, paper_reason = None, ""
    if opts.paper:
        try:
            ppl = [p if p is None or math.isfinite(p) else None
                   for p in await estimator.paper_perplexities(c0, paper_texts(split), target, deadline)]
            paper_value, paper_reason = _paper_value(ppl, n)
        except BackendResponseError as exc:
            log.warning("InfoGain, paper mode: %s", exc)
            paper_reason = UNUSABLE.format("the reference formula has", exc)

    truncated = list(scores.truncated) or [False] * (n + 1)
    truncated = [gains.window_truncated.get(i, truncated[i + 1]) for i in range(n)]  # per step
    steps = [
        _step_gain(step, nll[i + 1], gains, i, tokens, unit, gain_scale, truncated[i], ppl[i + 1])
        for i, step in enumerate(split.steps)
    ]
    valid = [g for g in gains.gains if g is not None]
    provenance = dataclasses.replace(deps.provenance, splitter=split.splitter, estimator=estimator.name,
                                     estimator_model=getattr(estimator, "served_model", ""))
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
        answer_tokens=tokens,
        units=opts.units,
        estimator=estimator.kind,
        prefill_tokens=scores.prefill_tokens + gains.prefill,
        status=ChainStatus.PARTIAL if len(valid) < n else ChainStatus.OK,
        llm_calls=scores.llm_calls + gains.calls + (split.llm_calls if count_split else 0),
        provenance=provenance,
    )


def _step_gain(step: Step, nll, gains: _Gains, i: int, tokens: int, unit: float, gain_scale: float,
               truncated: bool, ppl) -> StepGain:
    gain = gains.gains[i]
    flags = []
    if gains.windowed[i]:
        flags.append("windowed")
    if truncated:
        flags.append("truncated")
    if gain is None and gains.overflow[i]:
        flags.append("context_overflow")
    return StepGain(
        step=step,
        nll=None if nll is None else nll * unit,
        nll_per_token=None if nll is None or tokens <= 0 else nll * unit / tokens,
        gain=None if gain is None else gain * gain_scale,
        perplexity_paper=ppl,
        flags=tuple(flags),
        null_reason=gains.reasons[i] if gain is None else "",
    )
