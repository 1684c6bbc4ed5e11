"""Load shedding: a cap on calls and stream items in flight (health is never counted)."""

from __future__ import annotations

from .pipeline.errors import OverloadedError


class Admission:
    """Counts work in flight on the event loop; over the cap, work is refused at once."""

    def __init__(self, limit: int, retry_after_s: float = 0.2):
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.shed = 0

    def acquire(self) -> None:
        """Takes a slot or raises OverloadedError (RESOURCE_EXHAUSTED)."""
        if self.inflight >= self.limit:
            self.shed += 1
            raise OverloadedError(
                f"server is at its limit of {self.limit} requests in flight; retry later",
                retry_after_s=self.retry_after_s,
            )
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1

    def __enter__(self) -> "Admission":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
