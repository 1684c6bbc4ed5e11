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
import unicodedata
from dataclasses import dataclass

from ...pipeline.claims import bold_sentence
from ...pipeline.splitter import _HEADING as _TITLE
from ...pipeline.splitter import ROMAN

_TRANSLATE = str.maketrans(
    {"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-", "−": "-", "\u00a0": " "}
)
_WORD = re.compile(r"\w+")
MIN_WORD_RATIO = 0.8  # share of a step's words that must match the chain at the aligned place
WORD_WINDOW = 4000  # chain words after the previous step that a reworded step is looked for in


class StepNotFoundError(ValueError):
    """A step's text does not occur in the chain (at or after where the previous step starts)."""

    def __init__(self, index: int, text: str, earlier: bool = False):
        where = ("is in the chain, but not after the step before it (a repeated or out-of-order step)"
                 if earlier else "is not in the chain")
        super().__init__(f"step {index} {where}: {text[:80]!r}")
        self.index = index
        self.earlier = earlier


@dataclass(frozen=True)
class _Normalized:
    """The chain lower-cased, punctuation unified and whitespace runs collapsed, with a map back."""

    text: str
    origin: list[int]  # origin[i] = offset in the chain of normalized character i

    @classmethod
    def of(cls, text: str) -> "_Normalized":
        chars: list[str] = []
        origin: list[int] = []
        # Folded character by character: some characters lower to two ("İ" -> "i̇") or decompose ("é" -> "e" + U+0301),
        # and each produced character maps back to the chain character it came from.
        for i, original in enumerate(text.translate(_TRANSLATE)):
            if original.isspace():
                if chars and chars[-1] != " ":
                    chars.append(" ")
                    origin.append(i)
                continue
            for ch in _fold(original):
                chars.append(ch)
                origin.append(i)
        return cls("".join(chars), origin)


# A label the model put in front of a step the chain does not number: "Step 2:", "2.", "2)", "-", "*", "•".
_ADDED_LABEL = re.compile(r"(?:(?:step\s*\d{1,3}\s*[:.)]|\d{1,3}[.)]|[-*•])\s+)+", re.IGNORECASE)


def _variants(step: str) -> list[str]:
    """The step as the model wrote it, then without a label it may have added in front."""
    m = _ADDED_LABEL.match(step)
    return [step, step[m.end():]] if m and m.end() < len(step) else [step]


def _lower(text: str) -> str:
    """Lower-cased character by character, as _Normalized does (str.lower's context rules would differ)."""
    return "".join(ch.lower() for ch in text)


def _fold(ch: str) -> str:
    """One character lower-cased and decomposed (NFKD): "é" and "e" + U+0301 compare equal, so a chain in NFD
    (macOS text) still matches the model's NFC copy, and the reverse; so do the compatibility forms of text copied
    from PDFs and East Asian input ("ﬁrst" and "first", "ＡＢＣ" and "ABC", "µg" and "μg")."""
    low = ch.lower()
    if low.isascii():
        return low
    folded = unicodedata.normalize("NFKD", low).lower()
    return folded if not any(c.isspace() for c in folded) else "".join(c for c in folded if not c.isspace())


def _normalize(text: str) -> str:
    return " ".join("".join(_fold(ch) for ch in text.translate(_TRANSLATE)).split())


class StepAligner:
    """Finds where each step text starts in one chain, in order."""

    def __init__(self, chain: str):
        self.chain = chain
        self._normalized = _Normalized.of(chain)
        self._words = [(m.start(), m.end(), _lower(m.group())) for m in _WORD.finditer(chain)]
        self._word_starts = [start for start, _, _ in self._words]

    def starts(self, step_texts: list[str]) -> list[int]:
        """Offset where each step starts; strictly increasing. Raises StepNotFoundError.

        Each step is looked for after the end of the previous step's match, so a step whose text also
        occurs inside the previous step ("..., so the answer is B." then "So the answer is B.") is found
        where it follows, not inside its predecessor."""
        starts: list[int] = []
        cursor = 0
        for index, step in enumerate(step_texts):
            found = self.find(step, cursor)
            if found is None and starts:
                found = self._overlapping(step, starts[-1], cursor)
            if found is None:
                # a step the model repeated (or put out of order) is in the chain, only not after the one before it
                raise StepNotFoundError(index, step, earlier=self.find(step, 0) is not None)
            start, end = found
            starts.append(start)
            cursor = max(end, start + 1)
        return starts

    def _overlapping(self, step: str, previous_start: int, previous_end: int) -> tuple[int, int] | None:
        """A step that repeats the end of the previous one ("A. B." then "B. C."): its copy starting inside the
        previous step and running past it. The previous step then ends where this one starts; a step found
        only inside its predecessor (a repeated fragment) is still not found."""
        for variant in _variants(step.strip()):
            found = self._find_copy(variant, previous_start + 1)
            if found is not None and found[0] < previous_end < found[1]:
                return found
        return None

    def find(self, step: str, cursor: int) -> tuple[int, int] | None:
        """(start, end) offsets of step in the chain at or after cursor, or None."""
        step = step.strip()
        if not step:
            return None
        for variant in _variants(step):
            found = self._find_copy(variant, cursor)
            if found is not None:
                return found
        return self._find_words(step, cursor) if _normalize(step) else None

    def _find_copy(self, step: str, cursor: int) -> tuple[int, int] | None:
        """The earliest copy of step at or after cursor, exact or differing in whitespace, case, quotes, dashes."""
        pos = self.chain.find(step, cursor)
        if not _normalize(step):
            return (pos, pos + len(step)) if pos >= 0 else None
        if pos >= 0:
            # A copy that differs only in whitespace, case, quotes or dashes may sit before the exact one (the model
            # wrote "x = 2." for "x =  2.", and "x = 2." also occurs later): the step is the earlier one.
            earlier = self._find_normalized(step, cursor, before=pos)
            return earlier if earlier is not None else (pos, pos + len(step))
        return self._find_normalized(step, cursor)

    def _find_normalized(self, step: str, cursor: int, before: int | None = None) -> tuple[int, int] | None:
        """(start, end) of the normalized step at or after cursor (and starting before `before`), or None."""
        norm = self._normalized
        key = _normalize(step)
        lo = bisect.bisect_left(norm.origin, cursor)
        hi = len(norm.text) if before is None else bisect.bisect_left(norm.origin, before) + len(key) - 1
        pos = norm.text.find(key, lo, hi)
        if pos >= 0 and (before is None or norm.origin[pos] < before):
            return norm.origin[pos], norm.origin[pos + len(key) - 1] + 1
        return None

    def _find_words(self, step: str, cursor: int) -> tuple[int, int] | None:
        """Light rewording: align the step's words to the chain's words after the cursor.

        Only the WORD_WINDOW words after the cursor are searched: the steps follow each other in the chain,
        and searching the whole rest of a long chain for each of hundreds of reworded steps held the
        interpreter for seconds."""
        step_words = [_lower(w) for w in _WORD.findall(step)]
        first = bisect.bisect_left(self._word_starts, cursor)
        chain = self._words[first:first + WORD_WINDOW + len(step_words)]
        if not step_words or not chain:
            return None
        words = [w for _, _, w in chain]
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
        last = max(b.a + b.size - 1 for b in blocks if b.size)  # the last chain word the step matched
        return chain[start_word][0], chain[start_word + last][1]


# What the model may leave out in front of a step it copies: a list marker or number, a "Step k:" label, a heading
# mark, bold, a quote mark ("2. ", "**Step 2:** ", "- ", "(ii) ", "> ").
_LABEL_ONLY = re.compile(
    rf"(?:[ \t]*(?:[-*+•>]|#{{1,6}}|\(?(?:\d{{1,3}}|[A-Za-z]|{ROMAN})[.)]"
    r"|(?:\*\*|__)?(?:step|part|case)[ \t]*\d{1,3}[ \t]*[:.)\-–]?(?:\*\*|__)?[:.]?|\*\*|__)[ \t]*)+",
    re.IGNORECASE)

_INLINE_LABEL = re.compile(r"[.!?:;][ \t]+((?:\(?\d{1,3}[.)]|(?:\*\*)?step[ \t]*\d{1,3}[ \t]*[:.)](?:\*\*)?)[ \t]*)\Z",
                           re.IGNORECASE)


def with_labels(chain: str, starts: list[int]) -> list[int]:
    """Starts moved back over the labels and titles the model left out of its step texts.

    A model that copies "It lowers glucose." out of "1. ...\\n2. It lowers glucose." leaves the label "2." (or a
    "**Step 2:**" line above it) at the end of the step before, where it became a claim of its own. A step starts
    at its line's label, and at title lines just above it, as long as the step before keeps some text."""
    out = list(starts)
    for i in range(1, len(out)):
        previous, start = out[i - 1], out[i]
        nl = chain.rfind("\n", previous, start)
        if nl < 0 or (chain[nl + 1:start].strip() and not _LABEL_ONLY.fullmatch(chain, nl + 1, start)):
            # inside a line: only a number or "Step k:" label after a sentence end ("... DKA. 2. Insulin ...")
            head = max(previous, start - 40)
            inline = _INLINE_LABEL.search(chain[head:start])
            if inline and chain[previous:head + inline.start(1)].strip():
                out[i] = head + inline.start(1)
            continue
        new = nl + 1
        while True:  # title lines above ("**Step 2:**", "### Treatment"), blank lines between
            above = chain.rfind("\n", previous, nl)
            if above < 0:
                break
            line = chain[above + 1:nl]
            title = line.strip()
            if title and not (_TITLE.fullmatch(title) and not bold_sentence(title, 0, len(title))):
                break
            if line.strip():
                new = above + 1
            nl = above
        while new < start and chain[new].isspace():
            new += 1
        if chain[previous:new].strip():  # the step before keeps its own text
            out[i] = new
    return out
