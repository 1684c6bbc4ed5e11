"""Aligns step texts an LLM copied out of a chain back to character offsets in that chain.

Exact copies are found directly; copies that differ in whitespace, case,
quotes or dashes are found on a normalized text; light rewording is found by
word alignment. A step whose text cannot be found raises StepNotFoundError, so
a rewritten chain never gets made-up offsets.
"""

from __future__ import annotations

import bisect
import difflib
import re
from dataclasses import dataclass

_TRANSLATE = str.maketrans(
    {"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "−": "-", "\u00a0": " "}
)
_WORD = re.compile(r"\w+")
MIN_WORD_RATIO = 0.8  # share of a step's words that must match the chain at the aligned place


class StepNotFoundError(ValueError):
    """A step's text does not occur in the chain (at or after where the previous step starts)."""

    def __init__(self, index: int, text: str):
        super().__init__(f"step {index} is not in the chain: {text[:80]!r}")
        self.index = index


@dataclass(frozen=True)
class _Normalized:
    """The chain lower-cased, punctuation unified and whitespace runs collapsed, with a map back."""

    text: str
    origin: list[int]  # origin[i] = offset in the chain of normalized character i

    @classmethod
    def of(cls, text: str) -> "_Normalized":
        chars: list[str] = []
        origin: list[int] = []
        for i, ch in enumerate(text.translate(_TRANSLATE).lower()):
            if ch.isspace():
                if chars and chars[-1] != " ":
                    chars.append(" ")
                    origin.append(i)
                continue
            chars.append(ch)
            origin.append(i)
        return cls("".join(chars), origin)


def _normalize(text: str) -> str:
    return " ".join(text.translate(_TRANSLATE).lower().split())


class StepAligner:
    """Finds where each step text starts in one chain, in order."""

    def __init__(self, chain: str):
        self.chain = chain
        self._normalized = _Normalized.of(chain)
        self._words = [(m.start(), m.group().lower()) for m in _WORD.finditer(chain)]

    def starts(self, step_texts: list[str]) -> list[int]:
        """Offset where each step starts; strictly increasing. Raises StepNotFoundError."""
        starts: list[int] = []
        cursor = 0
        for index, step in enumerate(step_texts):
            pos = self.find(step, cursor)
            if pos is None:
                raise StepNotFoundError(index, step)
            starts.append(pos)
            cursor = pos + 1
        return starts

    def find(self, step: str, cursor: int) -> int | None:
        """Start offset of step in the chain at or after cursor, or None."""
        step = step.strip()
        if not step:
            return None
        pos = self.chain.find(step, cursor)
        if pos >= 0:
            return pos
        return self._find_normalized(step, cursor) if _normalize(step) else None

    def _find_normalized(self, step: str, cursor: int) -> int | None:
        norm = self._normalized
        key = _normalize(step)
        pos = norm.text.find(key, bisect.bisect_left(norm.origin, cursor))
        if pos >= 0:
            return norm.origin[pos]
        return self._find_words(step, cursor)

    def _find_words(self, step: str, cursor: int) -> int | None:
        """Light rewording: align the step's words to the chain's words after the cursor."""
        step_words = [w.lower() for w in _WORD.findall(step)]
        chain = [(o, w) for o, w in self._words if o >= cursor]
        if not step_words or not chain:
            return None
        words = [w for _, w in chain]
        matcher = difflib.SequenceMatcher(None, words, step_words, autojunk=False)
        longest = matcher.find_longest_match(0, len(words), 0, len(step_words))
        if not longest.size:
            return None
        start_word = longest.a - longest.b  # where the step's first word sits if the run is in place
        if start_word < 0:
            return None  # the step would begin before the previous one
        window = words[start_word:start_word + len(step_words)]
        blocks = difflib.SequenceMatcher(None, window, step_words, autojunk=False).get_matching_blocks()
        if sum(b.size for b in blocks) < MIN_WORD_RATIO * len(step_words):
            return None
        return chain[start_word][0]
