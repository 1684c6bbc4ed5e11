"""Runs blocking work (encoders, FAISS, local models) off the event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import Executor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Blocking:
    """Runs blocking callables on a bounded executor and knows how many are running."""

    def __init__(self, executor: Executor | None):
        self.executor = executor
        self._running = 0
        self._changed = threading.Condition()

    @property
    def running(self) -> int:
        """Callables executing now (queued ones not counted)."""
        return self._running

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._counted, functools.partial(fn, *args, **kwargs))

    def _counted(self, call: Callable[[], T]) -> T:
        with self._changed:
            self._running += 1
        try:
            return call()
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Blocks until nothing runs (True) or `timeout_s` passes (False)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout_s)
