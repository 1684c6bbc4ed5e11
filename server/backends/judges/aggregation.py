"""Evidence aggregation for the embedded judge: sentence windows over long evidence, rules over the top-k facts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ...pipeline.types import Evidence, LabelProbs, Verdict

NO_EVIDENCE = LabelProbs(0.0, 0.0, 1.0)
AGGREGATION_VERSION = "evidence-agg/7"  # 5: windows fitted to the model's token budget for the claim; 6: a tie
# in rank goes to the stronger premise at that rank; 7: every piece a window is cut into to fit is read


@dataclass(frozen=True)
class AggregationPolicy:
    """How one claim's verdict is read from the scores of its evidence."""

    window_chars: int = 700
    """Longest premise scored at once; longer evidence is cut into windows of whole sentences."""
    window_overlap: int = 1
    """Sentences shared by consecutive windows (a fact split across a boundary is still seen whole); none when the
    overlapping windows of a passage would be more than max_windows (reading its end matters more)."""
    max_windows: int = 16
    """Windows scored per piece of evidence (the rest of a very long passage is not read)."""
    joint_support: int = 2
    """The top facts read together as one premise, for support only (0 or 1 = off)."""
    conflict: str = "rank"
    """When one premise supports and another contradicts: `rank` (the better-retrieved one decides) or `stronger`."""
    min_decisive: float = 0.0
    """A premise supports or contradicts only when its top label has at least this probability; below it, it
    settles nothing (with five facts and their windows, some unrelated premise often tips to a label by chance)."""

    def __post_init__(self):
        if self.conflict not in ("rank", "stronger"):
            raise ValueError(f"conflict must be 'rank' or 'stronger', not {self.conflict!r}")
        if not 0.0 <= self.min_decisive < 1.0:
            raise ValueError("min_decisive must be in [0, 1)")
        if self.window_chars < 1 or self.max_windows < 1 or self.window_overlap < 0:
            raise ValueError("window_chars and max_windows must be positive, window_overlap not negative")

    def version(self) -> str:
        """The rules and their settings, for provenance and the verdict cache."""
        decisive = f",min_decisive={self.min_decisive:g}" if self.min_decisive else ""
        return (f"{AGGREGATION_VERSION}(window={self.window_chars},overlap={self.window_overlap},"
                f"max_windows={self.max_windows},joint={self.joint_support},conflict={self.conflict}{decisive})")


@dataclass(frozen=True)
class Unit:
    """One premise scored against a claim: a window of one piece of evidence, or top facts read together."""

    text: str
    evidence: tuple[int, ...]  # indices into the claim's evidence
    joint: bool = False


def windows(text: str, policy: AggregationPolicy) -> list[str]:
    """Consecutive sentence windows of at most window_chars (overlapping), or [text] when it fits."""
    text = text.strip()
    if len(text) <= policy.window_chars:
        return [text] if text else []
    from kb.chunking import ChunkSpec, chunk_spans

    # sentences packed as a KB packs facts (an over-long one cut at whitespace), overlapping
    spec = ChunkSpec(max_chars=policy.window_chars, overlap=policy.window_overlap)
    spans = chunk_spans(text, spec, limit=policy.max_windows + 1)
    if len(spans) > policy.max_windows and policy.window_overlap:
        # Overlapping windows would leave the passage's end unread (16 windows of 190-character sentences read the
        # first 6,800 characters of a 8,900-character passage): side by side they read each sentence once, as far
        # as max_windows allows.
        spans = chunk_spans(text, dataclasses.replace(spec, overlap=0), limit=policy.max_windows)
    return [text[start:end] for start, end in spans[:policy.max_windows]]


def split_to_fit(text: str, tokens: int, budget: int, count: Callable[[list[str]], list[int]]) -> list[str]:
    """`text` (`tokens` long, over `budget`) as consecutive windows of whole sentences that each fit in `budget`
    tokens: cut with proportionally fewer characters (an over-long sentence at whitespace, else anywhere), and a
    window still over it cut again. Dense text (CJK, chemical names, numbers) has far more tokens per character
    than prose, and the model silently drops whatever lies past its budget."""
    from kb.chunking import ChunkSpec, chunk_spans

    if budget < 1:
        return []  # a claim that fills the model's whole input leaves no room for a premise
    chars = max(1, min(len(text) - 1, int(len(text) * budget / tokens * 0.9)))  # < len(text): always progresses
    parts = [text[start:end] for start, end in chunk_spans(text, ChunkSpec(max_chars=chars))]
    out: list[str] = []
    for part, n in zip(parts, count(parts) if parts else []):
        out.extend([part] if n <= budget or len(part) <= 1 else split_to_fit(part, n, budget, count))
    return out


def units_for(evidence: Sequence[Evidence], policy: AggregationPolicy,
              cut: dict[str, list[str]] | None = None) -> list[Unit]:
    """Every premise to score for one claim, in evidence order; the joint unit (if any) last.

    cut: windows already cut from evidence texts (text -> windows), filled here: claims share their evidence."""
    cut = {} if cut is None else cut
    out = []
    for k, e in enumerate(evidence):
        if e.text not in cut:
            cut[e.text] = windows(e.text, policy)
        out.extend(Unit(w, (k,)) for w in cut[e.text])
    n = min(policy.joint_support, len(evidence))
    if n >= 2 and all(e.text.strip() for e in evidence[:n]):
        joint = " ".join(" ".join(e.text.split()) for e in evidence[:n])
        if len(joint) <= policy.window_chars:  # read together only when the model sees all of it
            out.append(Unit(joint, tuple(range(n)), joint=True))
    return out


def _decides(row: LabelProbs, verdict: Verdict, floor: float) -> bool:
    """Whether a premise's row settles the claim as verdict: its top label, with at least floor."""
    return row.verdict() is verdict and getattr(row, verdict.value) >= floor


def _best(rows: Sequence[LabelProbs], allowed: Sequence[bool], verdict: Verdict, floor: float = 0.0) -> int | None:
    """The allowed row that settles the claim as verdict with the highest probability of it."""
    best, value = None, -1.0
    for i, (row, ok) in enumerate(zip(rows, allowed)):
        if ok and _decides(row, verdict, floor) and getattr(row, verdict.value) > value:
            best, value = i, getattr(row, verdict.value)
    return best


def _conflict(rows: Sequence[LabelProbs], units: Sequence[Unit], best_s: int, best_c: int, how: str,
              floor: float = 0.0) -> Verdict:
    """Support against contradiction: by retrieval rank (a fact read together ranks as its last member) or strength.

    With `rank`, a tie (two windows of the best-ranked passage, or facts read together against their last fact)
    goes to the stronger of the premises at that rank: a stronger support from worse-ranked evidence, which
    would lose to that contradiction on its own, does not decide it."""
    if how == "rank":
        supports = [(max(u.evidence), r.supported) for u, r in zip(units, rows)
                    if _decides(r, Verdict.SUPPORTED, floor)]
        contradictions = [(max(u.evidence), r.contradicted) for u, r in zip(units, rows)
                          if _decides(r, Verdict.CONTRADICTED, floor) and not u.joint]
        rank_s, rank_c = min(k for k, _ in supports), min(k for k, _ in contradictions)
        if rank_s != rank_c:
            return Verdict.SUPPORTED if rank_s < rank_c else Verdict.CONTRADICTED
        support = max(p for k, p in supports if k == rank_s)
        contradiction = max(p for k, p in contradictions if k == rank_c)
        return Verdict.SUPPORTED if support >= contradiction else Verdict.CONTRADICTED
    return Verdict.SUPPORTED if rows[best_s].supported >= rows[best_c].contradicted else Verdict.CONTRADICTED


def aggregate(probs: np.ndarray, units: Sequence[Unit], evidence: Sequence[Evidence],
              policy: AggregationPolicy = AggregationPolicy()) -> tuple[LabelProbs, Verdict, tuple[Evidence, ...]]:
    """One claim's probabilities, verdict and evidence (deciding evidence first) from its units' rows.

    Support needs one premise that entails the claim: a single fact, a window of one,
    or the top facts read together. Contradiction needs a single fact (or a window of
    one) whose strongest label is contradiction; facts read together never
    contradict, since mixing subjects makes spurious conflicts. When both exist, the
    better-retrieved premise decides (NLI models call facts about a neighbouring
    subject contradictions; the fact closest to the claim is the one about it), or
    the stronger one with conflict="stronger". Otherwise the claim is not settled, and
    the single premise closest to settling it gives the probabilities (the cascade
    reads their confidence). The verdict is the top label of the probabilities reported,
    taken from the strongest premise of that label — except with min_decisive, where a
    claim no premise settles with that much is not_enough_info whatever its closest
    premise's top label.
    """
    if not units:
        return NO_EVIDENCE, Verdict.NOT_ENOUGH_INFO, tuple(evidence)
    rows = [LabelProbs.from_row(r) for r in np.asarray(probs, dtype=np.float64).reshape(len(units), 3)]
    single = [not u.joint for u in units]
    floor = policy.min_decisive
    best_s = _best(rows, [True] * len(units), Verdict.SUPPORTED, floor)
    best_c = _best(rows, single, Verdict.CONTRADICTED, floor)
    if best_s is not None and best_c is not None:
        verdict = _conflict(rows, units, best_s, best_c, policy.conflict, floor)
        row = best_s if verdict is Verdict.SUPPORTED else best_c
    elif best_s is not None:
        row, verdict = best_s, Verdict.SUPPORTED
    elif best_c is not None:
        row, verdict = best_c, Verdict.CONTRADICTED
    else:  # no premise settles it: every single premise's top label is not_enough_info (or below the floor)
        row = min((i for i in range(len(units)) if single[i]), key=lambda i: rows[i].not_enough_info)
        verdict = Verdict.NOT_ENOUGH_INFO
    first = units[row].evidence
    ordered = tuple(evidence[k] for k in first) + tuple(e for k, e in enumerate(evidence) if k not in first)
    return rows[row], verdict, ordered
