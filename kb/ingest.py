"""Reading documents from files and chunking them into facts."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from server.pipeline.splitter import sentence_spans

from .store import Fact


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str = ""
    title: str = ""


@dataclass(frozen=True)
class FieldMap:
    text: str = "text"
    id: str = "id"
    source: str = "source"
    title: str = "title"


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"input {path} does not exist")


def _jsonl_documents(path: Path, fields: FieldMap) -> Iterator[Document]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            text = row.get(fields.text)
            if not isinstance(text, str) or not text.strip():
                continue
            doc_id = str(row.get(fields.id) or f"{path.stem}:{lineno}")
            yield Document(doc_id, text, str(row.get(fields.source) or ""), str(row.get(fields.title) or ""))


def _text_documents(path: Path) -> Iterator[Document]:
    with _open_text(path) as fh:
        text = fh.read()
    if text.strip():
        yield Document(path.stem, text, str(path), "")


def read_documents(paths: Iterable[Path], fields: FieldMap = FieldMap()) -> Iterator[Document]:
    """Documents from JSONL(.gz) rows and plain-text files, in input order."""
    for path in _files(paths):
        name = path.name.removesuffix(".gz")
        if name.endswith((".jsonl", ".json", ".ndjson")):
            yield from _jsonl_documents(path, fields)
        elif name.endswith((".txt", ".md")):
            yield from _text_documents(path)
        else:
            raise ValueError(f"unsupported input format: {path} (use .jsonl, .jsonl.gz, .txt or .md)")


def chunk_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Packs whole sentences into chunks of at most max_chars (a longer sentence stays whole)."""
    chunks: list[tuple[int, int]] = []
    start = end = None
    for s, e in sentence_spans(text, 0, len(text)):
        if start is None:
            start, end = s, e
        elif e - start <= max_chars:
            end = e
        else:
            chunks.append((start, end))
            start, end = s, e
    if start is not None:
        chunks.append((start, end))
    return chunks


def chunk_documents(docs: Iterable[Document], max_chars: int = 500) -> Iterator[Fact]:
    """Facts with unique ids: the document id for a one-chunk document, else `doc_id#k`."""
    seen: dict[str, int] = {}
    for doc in docs:
        spans = chunk_spans(doc.text, max_chars)
        first = seen.get(doc.doc_id, 0)
        seen[doc.doc_id] = first + len(spans)
        for k, (s, e) in enumerate(spans):
            fact_id = doc.doc_id if len(spans) == 1 and first == 0 else f"{doc.doc_id}#{first + k}"
            yield Fact(fact_id, doc.doc_id, doc.text[s:e], doc.source, doc.title)
