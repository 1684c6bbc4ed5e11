"""Detects claims that state no domain fact (planning, restating, meta talk, bare set-up)."""

from __future__ import annotations

import re

_META = re.compile(
    r"^\s*(?:"
    r"let(?:'s| us)\b|we (?:need|want|have) to\b|we are (?:asked|given|told)\b|i (?:need|will|'ll)\b|"
    r"to (?:solve|answer|find|determine)\b|first,? (?:let|we|i)\b|now,? (?:let|we)\b|next,? (?:let|we)\b|"
    r"(?:so|thus|therefore|hence),? the (?:final )?answer is\b|the (?:final |correct )?answer is\b|"
    r"final answer\b|answer\s*:|in (?:summary|conclusion)\b|the question (?:asks|is asking)\b|"
    r"(?:okay|ok|alright|hmm|wait)\b"
    r")",
    re.IGNORECASE,
)
_ARITHMETIC = re.compile(r"^[\s\d.,+\-*/×÷=()%^$\\a-z]*$", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+")


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}


def is_no_knowledge(claim: str, question: str = "") -> bool:
    """True when the claim states no domain fact."""
    text = claim.strip()
    if not text or _META.match(text):
        return True
    letters = sum(ch.isalpha() for ch in text)
    if _ARITHMETIC.match(text) and letters <= 3:
        return True
    if question:
        words = _content_words(text)
        if words and len(words & _content_words(question)) / len(words) >= 0.9:
            return True
    return False
