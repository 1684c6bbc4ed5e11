"""Entry points the servicers call: validate, then score KI, InfoGain or both."""

from __future__ import annotations

from .chains import split_chain
from .deadline import NO_DEADLINE, Deadline
from .deps import PipelineDeps
from .info_gain import gather_or_cancel, score_info_gain
from .knowledge_index import score_knowledge
from .types import (
    ChainInput,
    ChainRequest,
    ChainResult,
    InfoGainRequest,
    InfoGainResult,
    KnowledgeRequest,
    KnowledgeResult,
    SplitResult,
)
from .validation import validate_chain, validate_info_gain, validate_knowledge


async def split(chain: ChainInput, splitter: str | None, deps: PipelineDeps,
                deadline: Deadline = NO_DEADLINE) -> SplitResult:
    from .errors import FieldViolation, InvalidArgumentError
    from .validation import check_chain

    violations: list[FieldViolation] = []
    check_chain(chain, deps.limits, violations)
    if violations:
        raise InvalidArgumentError(violations)
    return await split_chain(chain, deps, splitter, deadline)


async def knowledge(req: KnowledgeRequest, deps: PipelineDeps, deadline: Deadline) -> KnowledgeResult:
    validate_knowledge(req, deps.limits)
    return await score_knowledge(req, deps, deadline)


async def info_gain(req: InfoGainRequest, deps: PipelineDeps, deadline: Deadline) -> InfoGainResult:
    validate_info_gain(req, deps.limits)
    return await score_info_gain(req, deps, deadline)


async def chain(req: ChainRequest, deps: PipelineDeps, deadline: Deadline) -> ChainResult:
    """KI and InfoGain of one chain, concurrently, sharing one split of the chain."""
    validate_chain(req, deps.limits)
    base = req.knowledge or req.info_gain
    # one split for both metrics: validate_chain refused two different splitters
    splitter = (req.knowledge.options.splitter if req.knowledge else None) or (
        req.info_gain.options.splitter if req.info_gain else None)
    shared = await split_chain(base.chain, deps, splitter, deadline)
    jobs = []
    if req.knowledge is not None:
        jobs.append(score_knowledge(req.knowledge, deps, deadline, shared))
    if req.info_gain is not None:
        # the split's LLM calls are counted once: in the KI result, or here when InfoGain is all that was asked
        jobs.append(score_info_gain(req.info_gain, deps, deadline, shared, "info_gain_options",
                                    count_split=req.knowledge is None))
    # One metric failing fails the call at once and stops the other: waiting for it held the error back (a slow
    # judge turned InfoGain's UNAVAILABLE into DEADLINE_EXCEEDED) and spent the backends on a discarded result.
    results = list(await gather_or_cancel(*jobs))
    ki = results.pop(0) if req.knowledge is not None else None
    ig = results.pop(0) if req.info_gain is not None else None
    return ChainResult(knowledge=ki, info_gain=ig)
