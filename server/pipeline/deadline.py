"""Deadlines that backends respect: the RPC's remaining time, propagated by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """An absolute point in monotonic time (None = no deadline); `limit` names the server setting that set it when
    the server did (the caller asked for no deadline or a longer one), for the message of a call it cuts short."""

    at: float | None = None
    limit: str | None = None

    @classmethod
    def after(cls, seconds: float | None, limit: str | None = None) -> "Deadline":
        return cls(None if seconds is None else time.monotonic() + seconds, limit)

    def earliest(self, other: "Deadline") -> "Deadline":
        """The deadline that passes first (with its limit)."""
        if self.at is None:
            return other
        return self if other.at is None or self.at <= other.at else other

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
