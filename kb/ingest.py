"""Reading documents from JSONL(.gz), CSV/TSV(.gz), Parquet and plain-text files or directories."""

from __future__ import annotations

import csv
import gzip
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .chunking import chunk_spans  # noqa: F401  (re-exported: the historical home of chunking)

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str = ""
    title: str = ""


@dataclass(frozen=True)
class FieldMap:
    """Which input fields hold a document's text, id, source (or URL) and title."""

    text: str = "text"
    id: str = "id"
    source: str = "source"
    title: str = "title"


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                              and _format(p) is not None)
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"input {path} does not exist")


def _format(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    for fmt, suffixes in (("jsonl", JSONL_SUFFIXES), ("csv", CSV_SUFFIXES),
                          ("parquet", PARQUET_SUFFIXES), ("text", TEXT_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    return None


def _document(row: dict, fields: FieldMap, fallback_id: str) -> Document | None:
    text = row.get(fields.text)
    if not isinstance(text, str) or not text.strip():
        return None
    doc_id = row.get(fields.id)
    doc_id = fallback_id if doc_id is None or str(doc_id) == "" else str(doc_id)
    source = row.get(fields.source)
    title = row.get(fields.title)
    return Document(doc_id, text, "" if source is None else str(source), "" if title is None else str(title))


def _jsonl_documents(path: Path, fields: FieldMap) -> Iterator[Document]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line")
            doc = _document(row, fields, f"{path.name}:{lineno}")
            if doc is not None:
                yield doc


def _csv_documents(path: Path, fields: FieldMap) -> Iterator[Document]:
    csv.field_size_limit(sys.maxsize)  # real corpora hold whole articles in one cell
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if reader.fieldnames is None or fields.text not in reader.fieldnames:
            raise ValueError(f"{path}: no column {fields.text!r} (columns: {reader.fieldnames}); "
                             "choose one with --text-field")
        for rowno, row in enumerate(reader, 1):
            doc = _document(row, fields, f"{path.name}:{rowno}")
            if doc is not None:
                yield doc


def _parquet_documents(path: Path, fields: FieldMap) -> Iterator[Document]:
    import pyarrow.parquet as pq

    pfile = pq.ParquetFile(path)
    names = set(pfile.schema_arrow.names)
    if fields.text not in names:
        raise ValueError(f"{path}: no column {fields.text!r} (columns: {sorted(names)}); "
                         "choose one with --text-field")
    wanted = [c for c in dict.fromkeys((fields.text, fields.id, fields.source, fields.title)) if c in names]
    rowno = 0
    for batch in pfile.iter_batches(batch_size=4096, columns=wanted):
        for row in batch.to_pylist():
            rowno += 1
            doc = _document(row, fields, f"{path.name}:{rowno}")
            if doc is not None:
                yield doc


def _text_documents(path: Path) -> Iterator[Document]:
    with _open_text(path) as fh:
        text = fh.read()
    if text.strip():
        yield Document(path.name.removesuffix(".gz"), text, str(path), "")


def read_documents(paths: Iterable[Path], fields: FieldMap = FieldMap()) -> Iterator[Document]:
    """Documents from every input file (directories recursively), in input order."""
    readers = {"jsonl": _jsonl_documents, "csv": _csv_documents, "parquet": _parquet_documents}
    for path in _files(paths):
        fmt = _format(path)
        if fmt is None:
            raise ValueError(f"unsupported input format: {path} (use .jsonl, .csv, .tsv, .parquet, .txt or .md, "
                             "optionally .gz)")
        if fmt == "text":
            yield from _text_documents(path)
        else:
            yield from readers[fmt](path, fields)
