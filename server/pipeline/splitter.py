"""Rule-based step splitter and claim extractor (the embedded default).

Every step and claim is a [start, end) span of the chain text with no leading
or trailing whitespace; steps never overlap and together cover every
non-whitespace character of the chain.
"""

from __future__ import annotations

import re
from typing import Sequence

from .no_knowledge import is_no_knowledge
from .types import Claim, SplitResult, Step

SPLITTER_NAME = "rules/1"

_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
_LINE_START_MARKER = re.compile(
    r"^[ \t]*(?:#{1,6}\s|[-*•]\s|\d{1,3}[.)]\s|\(?[a-zA-Z][.)]\s|step\s*\d+\s*[:.)]|final answer|answer\s*:)",
    re.IGNORECASE,
)
_ABBREVIATIONS = {
    "e.g", "i.e", "dr", "mr", "mrs", "ms", "prof", "vs", "etc", "al", "fig", "approx", "no", "st", "inc",
    "cf", "resp", "min", "max", "eq", "vol", "ca", "mg", "ml", "kg",
}
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s+)")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence boundaries inside text[start:end], conservative around abbreviations and decimals."""
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _SENTENCE_END.finditer(text, start, end):
        cut = match.end()
        word = re.search(r"([A-Za-z][A-Za-z.]*)\.$", text[max(cursor, cut - 12):match.start() + 1])
        if word and (word.group(1).lower().rstrip(".") in _ABBREVIATIONS or len(word.group(1)) == 1):
            continue
        nxt = cut
        while nxt < end and text[nxt].isspace():
            nxt += 1
        if nxt < end and text[nxt].islower():
            continue
        s, e = _trim(text, cursor, cut)
        if e > s:
            spans.append((s, e))
        cursor = cut
    s, e = _trim(text, cursor, end)
    if e > s:
        spans.append((s, e))
    return spans


def _block_spans(text: str) -> list[tuple[int, int]]:
    """Paragraphs (blank-line separated), then list items / step markers on their own lines."""
    blocks: list[tuple[int, int]] = []
    cursor = 0
    for match in list(_BLANK_LINE.finditer(text)) + [None]:
        stop = match.start() if match else len(text)
        blocks.extend(_line_items(text, cursor, stop))
        cursor = match.end() if match else len(text)
    return [span for span in (_trim(text, s, e) for s, e in blocks) if span[1] > span[0]]


def _line_items(text: str, start: int, end: int) -> list[tuple[int, int]]:
    items: list[tuple[int, int]] = []
    item_start = start
    pos = start
    for line in text[start:end].splitlines(keepends=True):
        if pos > item_start and _LINE_START_MARKER.match(line):
            items.append((item_start, pos))
            item_start = pos
        pos += len(line)
    items.append((item_start, end))
    return items


class RuleSplitter:
    """Splits free text into steps; one claim per sentence of a step."""

    name = SPLITTER_NAME

    def __init__(self, max_sentences_per_step: int = 1):
        self.max_sentences_per_step = max_sentences_per_step

    def split(self, text: str, question: str = "") -> SplitResult:
        spans: list[tuple[int, int]] = []
        for start, end in _block_spans(text):
            block = text[start:end]
            if "\n" in block.strip() or _LINE_START_MARKER.match(block):
                spans.append((start, end))
            else:
                spans.extend(sentence_spans(text, start, end))
        steps = [self._step(text, i, s, e, question) for i, (s, e) in enumerate(spans)]
        return SplitResult(text, tuple(steps), self.name)

    def split_steps(self, steps: Sequence[str], question: str = "") -> SplitResult:
        text = "\n".join(steps)
        out: list[Step] = []
        offset = 0
        for i, raw in enumerate(steps):
            s, e = _trim(text, offset, offset + len(raw))
            out.append(self._step(text, i, s, e, question))
            offset += len(raw) + 1
        return SplitResult(text, tuple(out), self.name)

    def _step(self, text: str, index: int, start: int, end: int, question: str) -> Step:
        claims = tuple(
            Claim(text[s:e], s, e, is_no_knowledge(text[s:e], question))
            for s, e in sentence_spans(text, start, end)
        )
        return Step(index, text[start:end], start, end, claims, all(c.no_knowledge for c in claims))
