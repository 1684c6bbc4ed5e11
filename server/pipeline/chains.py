"""Turning a chain input into steps: split free text, or take pre-split steps as given."""

from __future__ import annotations

from .deps import PipelineDeps
from .errors import InvalidArgumentError
from .types import ChainInput, SplitResult


async def split_chain(chain: ChainInput, deps: PipelineDeps, splitter_name: str | None = None) -> SplitResult:
    splitter = await deps.splitter(splitter_name)
    if chain.steps:
        result = await deps.blocking.run(splitter.split_steps, list(chain.steps), chain.question)
    else:
        result = await deps.blocking.run(splitter.split, chain.reasoning or "", chain.question)
        if len(result.steps) > deps.limits.max_steps:
            raise InvalidArgumentError.single(
                "reasoning", f"splits into {len(result.steps)} steps; the limit is {deps.limits.max_steps}"
            )
    if not result.steps:
        raise InvalidArgumentError.single("reasoning", "the chain has no steps")
    return result
