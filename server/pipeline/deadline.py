"""Deadlines that backends respect: the RPC's remaining time, propagated by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """An absolute point in monotonic time (None = no deadline)."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> "Deadline":
        return cls(None if seconds is None else time.monotonic() + seconds)

    def remaining(self) -> float | None:
        return None if self.at is None else max(0.0, self.at - time.monotonic())

    def timeout(self, cap_s: float) -> float:
        """A backend timeout: the configured cap, never beyond the deadline."""
        remaining = self.remaining()
        return cap_s if remaining is None else min(cap_s, remaining)

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.0


NO_DEADLINE = Deadline()
