"""Runs blocking work (encoders, FAISS, local models) off the event loop."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Blocking:
    """Runs blocking callables on a bounded executor."""

    def __init__(self, executor: Executor | None):
        self.executor = executor

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))
