"""Chunking documents into facts: sentences packed into short passages, with optional overlap."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import asdict, dataclass
from typing import Iterator

from server.pipeline.splitter import sentence_spans


@dataclass(frozen=True)
class ChunkSpec:
    """How documents become facts; recorded in the manifest so `kb add` chunks the same way."""

    max_chars: int = 500
    """Longest fact in characters; sentences are packed whole up to this size."""
    overlap: int = 0
    """Sentences repeated from the end of one fact at the start of the next."""
    context_chars: int = 0
    """Characters of the source's first sentence given to each fact as context (0 = off).

    The source is the first document with the fact's id and source field: rows sharing both (sections of one
    article, the question-answer pairs of one page) are parts of one source, and its opening names the topic that later
    parts leave implicit ("This condition is inherited in an autosomal recessive pattern."). A fact whose
    text lacks its context gets a second vector, of context + text, and BM25 indexes context + text; the
    stored fact stays verbatim."""

    def __post_init__(self):
        if self.max_chars < 1:
            raise ValueError(f"max_chars must be positive, not {self.max_chars}")
        if self.overlap < 0 or self.context_chars < 0:
            raise ValueError("overlap and context_chars must not be negative")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ChunkSpec":
        return cls(**{k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__})


def _cut(text: str, start: int, max_chars: int) -> int:
    """Where a unit longer than max_chars is cut: at its last whitespace within reach (a space, a tab, a no-break
    space); else max_chars on, moved back so that a combining mark (an accent, a Thai or Devanagari vowel sign)
    stays with its letter."""
    limit = start + max_chars
    for cut in range(limit, start, -1):
        if text[cut].isspace():
            return cut
    cut = limit
    while cut > start + 1 and unicodedata.category(text[cut]).startswith("M"):
        cut -= 1
    return cut if not unicodedata.category(text[cut]).startswith("M") else limit


def _split_long(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """Cuts a unit longer than max_chars at whitespace (hard cut only when a word is longer)."""
    while end - start > max_chars:
        cut = _cut(text, start, max_chars)
        piece_end = cut
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        if piece_end > start:
            yield start, piece_end
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if end > start:
        yield start, end


def units(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Sentences within lines (a line break always ends a unit), none longer than max_chars."""
    out: list[tuple[int, int]] = []
    line_start = 0
    length = len(text)
    while line_start <= length:
        line_end = text.find("\n", line_start)
        if line_end < 0:
            line_end = length
        if text[line_start:line_end].strip():
            for s, e in sentence_spans(text, line_start, line_end):
                out.extend(_split_long(text, s, e, max_chars))
        line_start = line_end + 1
    return out


def chunk_spans(text: str, spec: ChunkSpec | int, limit: int | None = None) -> list[tuple[int, int]]:
    """[start, end) spans of the facts of one document, in order; every unit lands in at least one (or the first
    `limit` spans only: the judge's evidence windows)."""
    if isinstance(spec, int):
        spec = ChunkSpec(max_chars=spec)
    parts = units(text, spec.max_chars)
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(parts) and (limit is None or len(chunks) < limit):
        start, end = parts[i]
        j = i + 1
        while j < len(parts) and parts[j][1] - start <= spec.max_chars:
            end = parts[j][1]
            j += 1
        chunks.append((start, end))
        if j >= len(parts):
            break
        i = max(i + 1, j - spec.overlap)
    return chunks


def lead(text: str, spec: ChunkSpec) -> str:
    """A document's first sentence cut to context_chars: the context its source gives its facts."""
    if not spec.context_chars:
        return ""
    parts = units(text, max(spec.context_chars, 1))
    if not parts:
        return ""
    s, e = parts[0]
    return text[s:e]


def embed_input(fact_text: str, context: str) -> str:
    """What the embedder and BM25 see for a fact: its context line, then the fact itself."""
    if not context or context in fact_text:
        return fact_text
    return f"{context}\n{fact_text}"


def model_inputs(fact_text: str, context: str) -> list[str]:
    """The texts embedded for a fact: itself, plus itself in context when the context adds something.

    Dense search scores a fact by its best vector: the plain one wins for specific passages, the one in
    context for passages that leave their topic implicit.
    """
    in_context = embed_input(fact_text, context)
    return [fact_text] if in_context == fact_text else [fact_text, in_context]


def text_key(text: str) -> int:
    """De-duplication key of a fact's model input: equal up to case and whitespace means stored once."""
    normalized = " ".join(text.split()).casefold().encode("utf-8")
    return int.from_bytes(hashlib.blake2b(normalized, digest_size=8).digest(), "little", signed=True)


def embed_key(text: str) -> bytes:
    """Embedding-cache key of an embedder input."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
