"""Reading documents from JSONL(.gz), CSV/TSV(.gz), Parquet and plain-text files or directories."""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import math
import os
import re
import stat
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .chunking import chunk_spans  # noqa: F401  (re-exported: the historical home of chunking)
from .layout import holds_kb_files

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".txt", ".md", ".text")
# The one table of accepted inputs: format -> suffixes (each optionally .gz), in the order they are tried.
FORMATS = {"jsonl": JSONL_SUFFIXES, "csv": CSV_SUFFIXES, "parquet": PARQUET_SUFFIXES, "text": TEXT_SUFFIXES}
TEXT_JOINER = "\n\n"  # between the strings of a list-valued text field: every line break ends a chunking unit


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str = ""
    title: str = ""
    named: bool = field(default=True, compare=False)
    """The id came from the input (a row without one is named <file>:<line>, which files of the same name in other
    directories, or a later batch given to `kb add`, repeat for unrelated rows): only named documents share their
    source's context."""


@dataclass(frozen=True)
class FieldMap:
    """Which input fields hold a document's text, id, source (or URL) and title."""

    text: str = "text"
    id: str = "id"
    source: str = "source"
    title: str = "title"


def _gzipped(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def _open_text(path: Path):
    # utf-8-sig: a byte order mark (Excel's "CSV UTF-8", some JSONL writers) is not part of the first field's name
    if _gzipped(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _in_directory(root: Path, exclude: frozenset[Path] = frozenset()) -> Iterator[Path]:
    """Files of a directory input, sorted: nothing hidden below the root (.git, .ipynb_checkpoints), nothing inside
    a knowledge base, published or not, nor in an excluded directory (the output: a KB placed inside its input
    would be read back as documents, its manifest and BM25 files as JSON lines)."""
    if holds_kb_files(root):
        raise ValueError(f"input {root} is a knowledge base, not documents")
    found = []
    read = {root.resolve()}  # directories read, by real path: a linked directory is read once, a link loop ends
    for directory, subdirs, files in os.walk(root, followlinks=True):  # a linked directory holds documents too
        here = Path(directory)
        kept = []
        for d in subdirs:
            real = (here / d).resolve()
            if not d.startswith(".") and not holds_kb_files(here / d) and real not in exclude and real not in read:
                read.add(real)
                kept.append(d)
        subdirs[:] = kept
        found.extend(here / f for f in files
                     if not f.startswith(".") and _format(here / f) is not None and (here / f).is_file())
    return iter(sorted(found))


def check_input_path(path: Path) -> None:
    """FileNotFoundError for an input that does not exist; ValueError for one that is neither a regular file nor a
    directory (a pipe, process substitution `<(...)`, a device): inputs are read twice (checked and counted, then
    embedded), which a pipe cannot be. Nothing is opened (opening a FIFO would block)."""
    path = Path(path)
    if path.is_dir() or path.is_file():
        return
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist")
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    what = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or other special file"
    raise ValueError(f"input {path} is not a regular file or directory ({what}); inputs are read twice (checked and "
                     "counted, then embedded), so pipes and process substitution are not supported: write the "
                     "documents to a file and give its path")


def _files(paths: Iterable[Path], exclude: frozenset[Path] = frozenset()) -> Iterator[Path]:
    for path in paths:
        path = Path(path)
        check_input_path(path)
        if path.is_dir():
            yield from _in_directory(path, exclude)
        else:
            yield path


def _format(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    for fmt, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return fmt
    return None


def accepted_suffixes() -> str:
    """The accepted suffixes for messages: ".jsonl, .json, ..., .md or .text" (from FORMATS)."""
    suffixes = [suffix for group in FORMATS.values() for suffix in group]
    return f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"


def _missing(value) -> bool:
    """None, or a float NaN: pandas (and Parquet files written from it, JSON's NaN) marks a missing value so."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def field_text(value) -> str | None:
    """An id, source or title as text; None when missing (None, NaN, ""). A whole-number float is written as an
    integer: pandas turns an integer id column with a gap into float64 (1.0, NaN, 3.0), and its ids are "1", "3"."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text if text != "" else None


def document_text(value, where: str, field: str) -> str | None:
    """A row's text from its text field: a string, or a list of strings joined with a blank line (e.g. the
    sections of an abstract); None when the row has none (also NaN, pandas' missing value). Any other value is a
    ValueError naming the row."""
    if _missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return TEXT_JOINER.join(value)
    kind = "a list holding a non-string" if isinstance(value, (list, tuple)) else type(value).__name__
    raise ValueError(f"{where}: field {field!r} is {kind}, not text (a string or a list of strings); "
                     "choose the text with --text-field")


def _document(row: dict, fields: FieldMap, fallback_id: str, where: str) -> Document | None:
    text = document_text(row.get(fields.text), where, fields.text)
    if text is None or not text.strip():
        return None
    doc_id = field_text(row.get(fields.id))  # a missing id (None, NaN, "") is named after the row
    source = field_text(row.get(fields.source))
    title = field_text(row.get(fields.title))
    return Document(doc_id if doc_id is not None else fallback_id, text, source or "", title or "",
                    doc_id is not None)


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON's only way to hold a lone surrogate: an escape


def _refuse_lone_surrogates(row: dict, fields: FieldMap, where: str) -> None:
    """ValueError naming the row and field when a mapped field holds half of a surrogate pair ("\\ud800"): it is
    not Unicode text (nothing could store or embed it) and failed later with an error naming no file."""
    for name in dict.fromkeys((fields.text, fields.id, fields.source, fields.title)):
        value = row.get(name)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise ValueError(f"{where}: field {name!r} holds a lone surrogate "
                                     f"({item[exc.start]!r}), which is not Unicode text") from None


def _first_bad_utf8_line(path: Path) -> tuple[int, str] | None:
    """The line (1-based, physical) and reason of the first byte sequence that is not UTF-8, None if there is none
    (read again in binary: the text reader decodes ahead in blocks, so it cannot say where)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line = 1
    try:
        with (gzip.open(path, "rb") if _gzipped(path) else open(path, "rb")) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                pending = decoder.getstate()[0]  # bytes of a character cut by the previous block (never a newline)
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    return line + block.count(b"\n", 0, max(0, exc.start - len(pending))), exc.reason
                line += block.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return line, exc.reason
    except (OSError, EOFError, zlib.error):
        return None
    return None


def _one_document_advice(path: Path, line: str) -> str:
    """Advice for an input whose first line opens one JSON document (an array of objects, an object over several
    lines), a .json file as most tools write it: the error alone called valid JSON "not valid JSON"."""
    opening = line.lstrip()[:1]
    if opening not in ("[", "{"):
        return ""
    convert = "jq -c '.[]'" if opening == "[" else "jq -c ."
    return (f"; the file looks like one JSON document, and inputs hold JSON lines (one object per line): convert it, "
            f"e.g. {convert} {path.name} > {path.name.split('.')[0]}.jsonl")


def _jsonl_rows(path: Path, fields: FieldMap) -> Iterator[Document | None]:
    with _open_text(path) as fh:
        first = True
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                advice = _one_document_advice(path, line) if first else ""
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg}){advice}") from exc
            if not isinstance(row, dict):
                advice = _one_document_advice(path, line) if first else ""
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, not {type(row).__name__}"
                                 f"{advice}")
            first = False
            if _ESCAPED_SURROGATE.search(line):
                _refuse_lone_surrogates(row, fields, f"{path}:{lineno}")
            yield _document(row, fields, f"{path.name}:{lineno}", f"{path}:{lineno}")


def _csv_dialect(path: Path) -> dict[str, Any]:
    """Reader options: tabs for .tsv, commas otherwise; quoted cells as Python's csv and pandas write them, read
    strictly, so a stray quote is an error instead of text that loses its quotes or swallows the lines after it."""
    tsv = path.name.lower().removesuffix(".gz").endswith(".tsv")
    return {"delimiter": "\t" if tsv else ",", "strict": True}


def _csv_error(path: Path, line: int, exc: csv.Error) -> ValueError:
    kind = "TSV" if _csv_dialect(path)["delimiter"] == "\t" else "CSV"
    return ValueError(f"{path}: the row from line {line}: not a well-formed {kind} row ({exc}); a cell that starts with a quote "
                      "must be quoted whole, with its quotes doubled (as Python's csv module and pandas write it)")


def _csv_rows(path: Path, fields: FieldMap) -> Iterator[Document | None]:
    csv.field_size_limit(sys.maxsize)  # real corpora hold whole articles in one cell
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, **_csv_dialect(path))
        try:
            if reader.fieldnames is None or fields.text not in reader.fieldnames:
                raise ValueError(f"{path}: no column {fields.text!r} (columns: {reader.fieldnames}); "
                                 "choose one with --text-field")
            for rowno, row in enumerate(reader, 1):
                if None in row:  # more cells than the header: a delimiter inside an unquoted cell
                    raise ValueError(f"{path}: row {rowno} (line {reader.line_num}) has "
                                     f"{len(reader.fieldnames) + len(row[None])} cells, the header "
                                     f"{len(reader.fieldnames)}; quote a cell that holds the delimiter")
                yield _document(row, fields, f"{path.name}:{rowno}", f"{path}: row {rowno}")
        except csv.Error as exc:
            raise _csv_error(path, reader.line_num + 1, exc) from exc


def _parquet_rows(path: Path, fields: FieldMap) -> Iterator[Document | None]:
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
            yield _document(row, fields, f"{path.name}:{rowno}", f"{path}: row {rowno}")


def _text_rows(path: Path) -> Iterator[Document | None]:
    with _open_text(path) as fh:
        text = fh.read()
    yield Document(path.name.removesuffix(".gz"), text, str(path), "") if text.strip() else None


@dataclass(frozen=True)
class InputScan:
    """What a reading pass over the inputs found: rows (with text or without; a text file is one row) and the
    documents among them (rows with text)."""

    rows: int
    documents: int


class DocumentReader:
    """Documents from every input file (directories recursively), in input order.

    `rows` counts the rows read so far, with text or without (a text file is one row). `check()` (and
    `count_rows()`, which runs it) reads every input once up front, parsing and validating every row as the
    documents are read but holding none of them: bad input (invalid JSON, a text field of another type, a lone
    surrogate, a broken CSV row, a truncated .gz, a file that is not UTF-8) fails there, before anything is
    embedded, and progress can be shown against a total."""

    def __init__(self, paths: Iterable[Path], fields: FieldMap = FieldMap(), exclude: Iterable[Path] = ()):
        self.paths = [Path(p) for p in paths]
        self.fields = fields
        self.exclude = frozenset(Path(p).resolve() for p in exclude)  # directories not to read (the output KB)
        self.rows = 0
        self.scan: InputScan | None = None

    def _inputs(self) -> Iterator[tuple[Path, str]]:
        for path in _files(self.paths, self.exclude):
            fmt = _format(path)
            if fmt is None:
                raise ValueError(f"unsupported input format: {path} (use {accepted_suffixes()}, optionally .gz)")
            yield path, fmt

    def check(self) -> InputScan:
        """Reads every input once, as iterating does, and counts its rows and documents; raises what reading
        would (ValueError naming the file and line or row, FileNotFoundError). Memory stays flat: rows are
        parsed and dropped. Done once; later calls return the first pass's counts."""
        if self.scan is None:
            rows = documents = 0
            for _, doc in self._rows():
                rows += 1
                documents += doc is not None
            self.scan = InputScan(rows, documents)
        return self.scan

    def count_rows(self) -> int:
        """Rows in all inputs (see check(): every row is parsed and validated, so a bad one fails here)."""
        return self.check().rows

    def _rows(self) -> Iterator[tuple[Path, Document | None]]:
        """Every row of every input (None for a row without text), read errors made one ValueError naming the
        file and where."""
        readers = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}
        for path, fmt in self._inputs():
            rows = _text_rows(path) if fmt == "text" else readers[fmt](path, self.fields)
            done = 0
            try:
                for doc in rows:
                    done += 1
                    yield path, doc
            except UnicodeDecodeError as exc:
                bad = _first_bad_utf8_line(path)
                where = f"{path}:{bad[0]}" if bad else str(path)
                raise ValueError(f"{where}: is not UTF-8 text ({bad[1] if bad else exc.reason}); convert the file "
                                 "to UTF-8") from None
            except (UnicodeError, EOFError, gzip.BadGzipFile, zlib.error, csv.Error) as exc:
                # a truncated or not-gzip .gz, damaged compressed data, a broken CSV: name the file and where
                what = {EOFError: "ends early (a truncated .gz?)", gzip.BadGzipFile: "is not gzip data",
                        zlib.error: "holds damaged compressed data (a damaged .gz?)"}.get(type(exc), "cannot be read")
                raise ValueError(f"{path}: {what} after {done} rows ({exc})") from None
            except FileNotFoundError:
                raise
            except OSError as exc:  # unreadable (permissions, I/O error): an input problem, status 2, one line
                raise ValueError(f"{exc.filename or path}: cannot be read ({exc.strerror or exc})") from None
            except ValueError as exc:
                if str(path) in str(exc):
                    raise
                raise ValueError(f"{path}: cannot be read after {done} rows ({exc})") from exc  # e.g. Parquet

    def __iter__(self) -> Iterator[Document]:
        for _, doc in self._rows():
            self.rows += 1
            if doc is not None:
                yield doc


def read_documents(paths: Iterable[Path], fields: FieldMap = FieldMap()) -> Iterator[Document]:
    """Documents from every input file (directories recursively), in input order."""
    return iter(DocumentReader(paths, fields))
