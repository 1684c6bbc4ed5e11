"""Turning a chain input into steps: split free text, or take pre-split steps as given."""

from __future__ import annotations

from .deadline import NO_DEADLINE, Deadline
from .deps import PipelineDeps
from .errors import InvalidArgumentError
from .types import ChainInput, SplitResult
from .validation import setting


async def split_chain(chain: ChainInput, deps: PipelineDeps, splitter_name: str | None = None,
                      deadline: Deadline = NO_DEADLINE) -> SplitResult:
    splitter = await deps.splitter(splitter_name)
    if chain.steps:
        result = await deps.blocking.run(splitter.split_steps, list(chain.steps), chain.question)
    elif hasattr(splitter, "asplit"):  # a backend splitter (LLM decomposer) that awaits a remote model
        result = await splitter.asplit(chain.reasoning or "", chain.question, deadline)
    else:
        result = await deps.blocking.run(splitter.split, chain.reasoning or "", chain.question)
    if not chain.steps:
        if len(result.steps) > deps.limits.max_steps:
            raise InvalidArgumentError.single(
                "reasoning", f"splits into {len(result.steps)} steps; the limit is {deps.limits.max_steps} "
                             f"({setting('max_steps')})"
            )
        limit = deps.limits.max_step_chars
        for i, step in enumerate(result.steps):  # the same limit as pre-split steps: work grows with step length
            if len(step.text) > limit:
                raise InvalidArgumentError.single(
                    "reasoning", f"step {i} (characters {step.start}-{step.end}) is {len(step.text)} characters "
                                 f"long after splitting; the limit is {limit} ({setting('max_step_chars')}): "
                                 "break the text into sentences or "
                                 "paragraphs, or send pre-split steps")
    if not result.steps:
        raise InvalidArgumentError.single("reasoning", "the chain has no steps")
    return result
