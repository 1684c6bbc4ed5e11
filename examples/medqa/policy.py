"""What the medical QA service does with a verification result or a verifier failure (fail-open / fail-closed)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The verifier could not judge the answer: these codes (and a missing socket) trigger the fail mode.
VERIFIER_FAILURES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "INTERNAL",
                     "UNKNOWN", "CANCELLED", "FAILED_PRECONDITION", "INVALID_ARGUMENT"}


@dataclass(frozen=True)
class Decision:
    """The service's answer: HTTP status, whether the model's answer is released, and why."""

    http_status: int
    status: str  # verified | flagged | withheld | unverified
    release: bool
    verification: dict[str, Any] = field(default_factory=dict)


def decide_on_score(score, min_ki: float, fail_mode: str = "closed") -> Decision:
    """Content policy: a contradicted step withholds the answer; a low KI flags it; a chain with steps that could
    not be judged (partial) is a verifier failure for those steps and follows the fail mode."""
    contradicted = [{"step": s.index, "start": s.start, "end": s.end} for s in score.steps
                    if s.verdict == "contradicted"]
    details = {"knowledge_index": score.knowledge_index, "coverage": score.coverage,
               "first_error_step": score.first_error_step, "contradicted_steps": contradicted,
               "provenance": {k: score.provenance.get(k, "") for k in ("kb_id", "judge")}}
    if contradicted:
        return Decision(200, "withheld", False, details)
    if score.status == "partial":  # some steps could not be judged: not everything was checked
        failure = decide_on_failure("PARTIAL", fail_mode)
        return dataclasses.replace(failure, verification={**details, **failure.verification})
    if score.knowledge_index is not None and score.knowledge_index < min_ki:
        return Decision(200, "flagged", True, details)
    return Decision(200, "verified", True, details)


def decide_on_failure(code: str, fail_mode: str) -> Decision:
    """Availability policy: fail-open releases the unverified answer, fail-closed withholds it with 503."""
    details = {"reason": code}
    if fail_mode == "open":
        return Decision(200, "unverified", True, details)
    return Decision(503, "unverified", False, details)
