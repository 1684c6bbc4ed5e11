"""Batch dataset formats: JSONL, CSV and Parquet rows in; CSV or Parquet exported from the JSONL journal."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import os
import re
import socket
import tempfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

INPUT_FORMATS = ("jsonl", "csv", "parquet")
EXPORT_FORMATS = ("csv", "parquet")
# File name endings batch reads (before an optional .gz: JSONL and CSV only) and their format.
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
                  ".pq": "parquet"}
SUPPORTED = ".jsonl, .jsonl.gz, .csv, .csv.gz or .parquet"
# The columns a CSV or Parquet input holds its chains in (one at least: a row without either cannot be scored).
CHAIN_COLUMNS = ("reasoning", "steps")
# Row fields that hold lists; CSV cells carry them as JSON text.
LIST_FIELDS = ("steps", "context", "choices")
# Of those, the ones that may also hold a JSON object: choices keyed by letter ({"A": "...", "B": "..."}).
OBJECT_FIELDS = ("choices",)
# Export columns in this order; nested values become JSON strings so every cell is a scalar.
FLOAT_COLUMNS = ("knowledge_index", "knowledge_index_paper", "coverage", "info_gain", "info_gain_total",
                 "info_gain_paper")
INT_COLUMNS = ("error_steps", "first_error_step", "llm_calls", "n_steps")
STRING_COLUMNS = ("id", "group", "question_id", "status", "status_code", "status_reason", "status_message",
                  "target", "estimator", "units", "info_gain_null_reason")
JSON_COLUMNS = ("counts", "steps", "provenance")
# Longest CSV cell read (the csv module's own default, 131,072 characters, is less than one long chain with its
# context): a row too large to send gets its own REQUEST_TOO_LARGE record instead of stopping the run.
CSV_FIELD_LIMIT = 2**31 - 1
# What reading a file that breaks off or is damaged midway raises (a truncated or corrupt .gz, an I/O error).
READ_ERRORS = (OSError, EOFError, zlib.error)
# Set on the record of a row without an id of its own (missing, invalid or repeated): the input row it is for.
INPUT_ROW = "input_row"


class RowError(ValueError):
    """An input row that cannot be read (it gets an INVALID_ARGUMENT record of its own)."""

    def __init__(self, message: str, reason: str = "INVALID_ROW", row_id: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.row_id = row_id  # when the row's id could still be read


class InputError(ValueError):
    """The input file as a whole cannot be read (format, encoding, no id column): the run stops before scoring."""


def input_format(path: Path, explicit: str | None = None) -> str:
    """The input format: explicit, or from the file name (.jsonl/.ndjson/.json, .csv, .parquet/.pq, each JSONL
    or CSV optionally .gz); InputError for a name that says none of them."""
    if explicit:
        if explicit not in INPUT_FORMATS:
            raise InputError(f"unknown input format {explicit!r} (known: {', '.join(INPUT_FORMATS)})")
        return explicit
    suffixes = [s.lower() for s in Path(path).suffixes]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    last = (suffixes[:-1] if gzipped else suffixes)[-1:] or [""]
    fmt = SUFFIX_FORMATS.get(last[0])
    if fmt is None or (gzipped and fmt == "parquet"):
        raise InputError(f"cannot read {Path(path).name}: batch input is {SUPPORTED} (JSONL: one JSON object per "
                         "line; CSV: comma-separated with a header row); convert it, or give --input-format if "
                         "the name is misleading")
    return fmt


def check_input(path: Path, fmt: str | None = None) -> str:
    """The input's format, after the checks that need no scoring: InputError for a JSON array or pretty-printed
    JSON where JSONL is expected, and for a CSV or Parquet file without an 'id' column or a chain column."""
    fmt = input_format(path, fmt)
    try:
        if fmt in ("jsonl", "csv"):
            _check_text_encoding(path)
        if fmt == "jsonl":
            _check_not_json_array(path)
        elif fmt == "csv":
            with _open_text(path, "utf-8-sig") as fh:
                reader = _csv_reader(fh)
                try:
                    _require_columns(path, reader.fieldnames)
                except UnicodeDecodeError as exc:
                    raise _undecodable(path, exc) from None
                except csv.Error as exc:
                    raise _csv_error(path, reader, 1, exc) from None
        else:
            _require_columns(path, _parquet_file(path).schema_arrow.names, empty_ok=False)
    except READ_ERRORS as exc:  # unreadable, or a damaged .gz
        raise InputError(f"{path}: cannot be read ({exc})") from None
    return fmt


def _csv_reader(fh) -> csv.DictReader:
    """strict: a quoted cell that is never closed is an error (it would take every row after it as its text) and
    so is text after a closing quote (`"a"b`)."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    return csv.DictReader(fh, strict=True)


def _csv_error(path: Path, reader: csv.DictReader, start: int, error: csv.Error) -> InputError:
    if str(error) == "unexpected end of data":
        return InputError(f"{path}: the row from line {start} on has a quoted cell that is never closed: it runs to "
                          "the end of the file and would take the rows after it as its text; fix its quotes")
    # (the underlying reader's line: DictReader.line_num is that of the last row read whole)
    return InputError(f"{path}: line {reader.reader.line_num}: not readable as CSV ({error})")


def _require_columns(path: Path, columns: list[str] | None, empty_ok: bool = True) -> None:
    if columns is None and empty_ok:
        return  # an empty file: no rows
    if columns and len(columns) == 1 and "id" in columns[0].split("\t"):
        raise InputError(f"{path}: its header is tab-separated (TSV), which batch does not read: convert it to "
                         "JSONL, or to CSV (comma-separated)")
    if not columns or "id" not in columns:
        raise InputError(f"{path}: no column 'id' (columns: {list(columns or [])}); every row needs an id "
                         "(rename the column that identifies rows to 'id')")
    if not any(name in columns for name in CHAIN_COLUMNS):  # every row would be refused, one call each
        spaced = [name for name in columns if name != name.strip()]
        hint = (f"; the names {spaced} have spaces around them: write the header without spaces after the commas"
                if spaced else "")
        raise InputError(f"{path}: no column 'reasoning' or 'steps' (columns: {list(columns)}): every row needs "
                         f"its reasoning chain, as text or as a JSON list of steps{hint}")


def read_rows(path: Path, fmt: str | None = None) -> Iterator[tuple[str, Any]]:
    """(row label, row dict or the RowError that kept it from being read) for each row of the dataset; InputError
    when the file as a whole cannot be read (see check_input)."""
    fmt = check_input(path, fmt)
    rows = _csv_rows(path) if fmt == "csv" else _parquet_rows(path) if fmt == "parquet" else _jsonl_rows(path)
    label = None
    try:
        for label, row in rows:
            yield label, row
    except READ_ERRORS as exc:  # e.g. a .gz cut off by an interrupted download: the rows after it are lost
        where = f"after {label.replace('-', ' ')}" if label else "before its first row"
        raise InputError(f"{path}: cannot be read {where} ({exc}); repair or replace the file (e.g. download it "
                         "again) and run the same command again") from None


def _open_text(path: Path, encoding: str = "utf-8"):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def _not_utf8(lineno: int, raw: bytes, error: UnicodeDecodeError) -> str:
    return (f"line {lineno} is not UTF-8 text (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
            "save the file as UTF-8")


def _undecodable(path: Path, error: UnicodeDecodeError) -> InputError:
    """The file and line of the first bytes that are not UTF-8 (found again line by line: a text reader decodes
    in blocks and cannot tell)."""
    with _open_binary(path) as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return InputError(f"{path}: {_not_utf8(lineno, line, exc)} (Excel: 'CSV UTF-8')")
    return InputError(f"{path}: not UTF-8 text ({error.reason}); save the file as UTF-8")


_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"),
         (b"\xff\xfe", "UTF-16"))


def _check_text_encoding(path: Path) -> None:
    """InputError for text that is not UTF-8 as a whole (UTF-16 or UTF-32, e.g. from PowerShell's `>`) and for
    gzip data under a name without .gz: read line by line, every line would be a bad row of its own."""
    with open(path, "rb") as fh:
        raw = fh.read(4)
    if raw.startswith(b"\x1f\x8b") and not str(path).lower().endswith(".gz"):
        raise InputError(f"{path} is gzip-compressed: name it with .gz at the end (e.g. {Path(path).name}.gz) "
                         "or decompress it")
    with _open_binary(path) as fh:
        head = fh.read(4096)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            raise InputError(f"{path} is {encoding} text (it starts with the byte order mark "
                             f"{bom.hex(' ').upper()}); save it as UTF-8 (e.g. iconv -f {encoding} -t UTF-8)")
    if b"\x00" in head:
        raise InputError(f"{path} holds NUL bytes: UTF-16 text without a byte order mark, or binary data, not "
                         "UTF-8 text; save it as UTF-8")


def _check_not_json_array(path: Path) -> None:
    """InputError for a JSON array, and for JSON objects spread over lines (pretty-printed, e.g. a .json file with
    its rows in a list inside it): read line by line, every line would be a bad row of its own."""
    with _open_binary(path) as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        raise InputError(f"{path} holds a JSON array; JSONL expected: one object per line "
                         f"(e.g. jq -c '.[]' {Path(path).name} > rows.jsonl)")
    lines = [line.strip() for line in head.split(b"\n")[:-1] if line.strip()][:2]  # (whole lines only)
    if len(lines) == 2 and lines[0].startswith(b"{") and not lines[0].endswith(b"}") and not _is_json(lines[1]):
        name = Path(path).name  # (a JSONL row is whole on its line: only a first line that is cut short is not)
        raise InputError(f"{path} holds JSON spread over several lines (pretty-printed: its first lines are "
                         f"{_head_of(lines[0])} and {_head_of(lines[1])}); JSONL expected: one object per line "
                         f"(e.g. jq -c . {name} > rows.jsonl, or jq -c '.KEY[]' {name} > rows.jsonl for the rows "
                         "in a list under KEY)")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _head_of(line: bytes, limit: int = 40) -> str:
    text = line.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _decoded_line(raw: bytes, lineno: int) -> str | RowError:
    """A JSONL line as text, or the RowError of a line that is not UTF-8 (keeping the row's id if readable)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        row_id = None
        try:
            row = json.loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            row = None
        if (isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and not isinstance(row["id"], bool)
                and "\ufffd" not in str(row["id"])):
            row_id = str(row["id"])
        return RowError(_not_utf8(lineno, raw, exc), "INVALID_UTF8", row_id)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_binary(path) as fh:  # bytes, decoded line by line: one bad line is one bad row
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
            line = _decoded_line(raw, lineno)
            if isinstance(line, RowError):
                yield f"line-{lineno}", line
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:  # (also a number Python will not convert: over 4300 digits)
                yield f"line-{lineno}", RowError(f"line {lineno} is not valid JSON: {exc}", "INVALID_JSON")
                continue
            except RecursionError:
                yield f"line-{lineno}", RowError(f"line {lineno} is nested too deeply to read", "INVALID_JSON")
                continue
            yield f"line-{lineno}", row if isinstance(row, dict) else RowError(f"line {lineno} is not a JSON object")


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path, "utf-8-sig") as fh:  # -sig: Excel's "CSV UTF-8" starts with a byte order mark
        reader = _csv_reader(fh)
        rows = enumerate(reader, 1)
        while True:
            start = 1
            try:
                reader.fieldnames  # noqa: B018  (the header, read first: `start` is then the row's first line)
                start = reader.reader.line_num + 1
                number, raw = next(rows)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _undecodable(path, exc) from None
            except csv.Error as exc:
                raise _csv_error(path, reader, start, exc) from None
            label = f"row-{number}"
            row: dict[str, Any] = {}
            try:
                for key, value in raw.items():
                    if key is None:
                        raise RowError(f"row {number} has more cells than the header")
                    if value is None or value == "":
                        continue  # an empty cell is an absent field
                    row[key] = _list_cell(key, value, number) if key in LIST_FIELDS else value
            except RowError as exc:
                exc.row_id = raw.get("id") or None
                yield label, exc
                continue
            yield label, row


def _list_cell(key: str, value: str, number: int) -> Any:
    """A CSV cell of a list field, parsed from its JSON (choices may also be an object keyed by letter, as in JSONL;
    the message names the list, the usual form)."""
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        raise RowError(f"row {number}: column {key!r} must hold a JSON list") from None
    if not isinstance(parsed, list) and not (key in OBJECT_FIELDS and isinstance(parsed, dict)):
        raise RowError(f"row {number}: column {key!r} must hold a JSON list")
    return parsed


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not readable as Parquet ({exc})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow as pa

    number = 0
    batches = _parquet_file(path).iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            try:
                rows = batch.to_pylist()
            except UnicodeDecodeError:  # text that is not UTF-8 (a writer that does not check it, or damage)
                rows = [_parquet_row(batch, index, number + index + 1) for index in range(batch.num_rows)]
        except pa.ArrowException as exc:  # a damaged page (an OSError one already is): the rows after it are lost
            raise OSError(f"not readable as Parquet: {exc}") from None
        for raw in rows:
            number += 1
            yield f"row-{number}", raw if isinstance(raw, RowError) else _typed_numbers(
                {k: v for k, v in raw.items() if v is not None})


# Row fields holding answers as text or whole numbers (see client.requests): from a typed (Parquet) column, a whole
# float is the integer it stands for (a column of whole numbers with a gap is read as floats: [36.0, None, 36.0]).
TYPED_NUMBER_FIELDS = ("answer", "gold_answer", "choices")


def whole_number(value: Any) -> Any:
    """A float that is a whole number as the int it stands for (36.0 -> 36: a column of whole numbers with a gap,
    read as floats); any other value as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _typed_numbers(row: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row with the whole floats of its answer fields as ints (see TYPED_NUMBER_FIELDS)."""
    for key in TYPED_NUMBER_FIELDS:
        value = row.get(key)
        if isinstance(value, float):
            row[key] = whole_number(value)
        elif isinstance(value, list):
            row[key] = [whole_number(v) for v in value]
        elif isinstance(value, dict):
            row[key] = {k: whole_number(v) for k, v in value.items()}
    return row


def _parquet_row(batch: Any, index: int, number: int) -> dict[str, Any] | RowError:
    """One row of a batch, or the RowError of one holding text that is not UTF-8 (keeping its id if readable)."""
    row: dict[str, Any] = {}
    bad = None
    for name, column in zip(batch.schema.names, batch.columns):
        try:
            row[name] = column[index].as_py()
        except UnicodeDecodeError:
            bad = bad or name
    if bad is None:
        return row
    return RowError(f"row {number}: column {bad!r} holds text that is not UTF-8; save the file's text as UTF-8",
                    "INVALID_UTF8", row.get("id"))


# ---- export ---------------------------------------------------------------------------------------

def flatten_record(record: dict[str, Any]) -> dict[str, Any]:
    """One export row: scalars as they are, nested fields as JSON strings, the status split into columns."""
    status = record.get("status")
    if isinstance(status, dict):
        state, code, reason, message = "error", status.get("code"), status.get("reason"), status.get("message")
    else:
        state, code, reason, message = status, "OK", None, None
    row: dict[str, Any] = {
        "id": record.get("id"), "group": _str_or_none(record.get("group")),
        "question_id": _str_or_none(record.get("question_id")), "status": state, "status_code": code,
        "status_reason": reason, "status_message": message, "target": record.get("target"),
        "estimator": record.get("estimator"), "units": record.get("units"),
        "info_gain_null_reason": record.get("info_gain_null_reason"),
    }
    for name in FLOAT_COLUMNS:
        value = record.get(name)
        row[name] = float(value) if isinstance(value, (int, float)) else None
    for name in INT_COLUMNS:
        value = len(record.get("steps") or []) if name == "n_steps" else record.get(name)
        row[name] = int(value) if isinstance(value, int) else None
    for name in JSON_COLUMNS:
        value = record.get(name)
        row[name] = None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)
    return row


def _str_or_none(value: Any) -> str | None:
    """A group or question id as text: a whole float as its integer (3.0 -> "3", as report pairs them)."""
    return None if value is None else str(whole_number(value))


def export_columns() -> list[str]:
    return [*STRING_COLUMNS, *FLOAT_COLUMNS, *INT_COLUMNS, *JSON_COLUMNS]


def is_batch_record(record: Any) -> bool:
    """Whether a JSON value is a batch output record: an object with a string id and the status every record has,
    "ok" / "partial" or {"code", ...}."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return False
    status = record.get("status")
    return status in ("ok", "partial") or (isinstance(status, dict) and isinstance(status.get("code"), str))


_RECORD_START = re.compile(rb'\{"id": "(?:[^"\\]|\\.)*"')
_STATUS_KEY = b', "status": '


def could_be_torn_record(tail: bytes) -> bool:
    """Whether bytes without a final newline can be the start of a journal line cut off by a crash: records are
    written as {"id": "...", "status": ...}, so a dataset row or any other text is told apart."""
    head = b'{"id": "'
    if len(tail) <= len(head):
        return head.startswith(tail)
    match = _RECORD_START.match(tail)
    if match is None:
        return tail.startswith(head)  # cut off within the id
    rest = tail[match.end():]
    return _STATUS_KEY.startswith(rest) if len(rest) < len(_STATUS_KEY) else rest.startswith(_STATUS_KEY)


def first_lines_hold(path: Path, test: Callable[[Any], bool], lines: int = 5) -> bool:
    """Whether one of a file's first `lines` lines is JSON that passes `test` (False for a file that cannot be
    read)."""
    try:
        with open(path, "rb") as fh:
            for _, line in zip(range(lines), fh):
                try:
                    if test(json.loads(line)):
                        return True
                except (ValueError, RecursionError):
                    continue
    except OSError:
        return False
    return False


def is_journal_file(path: Path, lines: int = 5) -> bool:
    """Whether an existing file starts like a batch journal (its first JSON lines are batch records)."""
    return first_lines_hold(path, is_batch_record, lines)


def record_key(record: dict[str, Any]) -> Any:
    """The journal key of a record: its id, or (id, INPUT_ROW) for the record of a row that has no id of its own
    (missing, invalid or repeated): such keys never meet a real row's id, whatever its text."""
    return record["id"] if INPUT_ROW not in record else (record["id"], INPUT_ROW)


def is_error_record(record: dict[str, Any]) -> bool:
    """Whether a journal record is a row's error (status {code, reason, message}) rather than its result."""
    return isinstance(record.get("status"), dict)


def complete_last_line(line: bytes) -> dict[str, Any] | None:
    """The batch record a last line without its newline holds whole (a file cut after the record's closing brace,
    or edited by a tool that drops the final newline), else None: a line torn by a crash midway through its write
    is not JSON (a record is one object: no proper beginning of it parses)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if is_batch_record(record) else None


def _complete_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every complete record (a torn last line is not a record; a last line without
    its newline that holds a whole record is)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh):
            if not line.endswith(b"\n"):
                record = complete_last_line(line)
                if record is not None:
                    yield number, record
                break
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):  # not JSON, or not UTF-8 (a file that is not a journal)
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                yield number, record


def journal_records(path: Path) -> Iterator[dict[str, Any]]:
    """One record per row id, in journal order: the last complete record written for it (a row scored again
    with `kgverify batch --retry-errors` replaces its error record). Two passes, so memory stays one line
    number per id however large the journal."""
    last = {record_key(record): number for number, record in _complete_records(path)}
    for number, record in _complete_records(path):
        if last.get(record_key(record)) == number:  # (a record appended between the passes is left out)
            yield record


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula (=, +, -, @, tab, CR: e.g. an id
    or a group from the input, or a server's message) gets a leading ' (OWASP's CSV injection advice). Numbers
    stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def export_format(out: Path) -> str:
    """csv or parquet, from the export file's name; ValueError for any other name."""
    fmt = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(Path(out).suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot export to {Path(out).name}: give a .csv or .parquet file")
    return fmt


# Parquet export rows are written a row group at a time: at most this many rows or (about) bytes of cell text.
EXPORT_CHUNK_ROWS = 1024
EXPORT_CHUNK_BYTES = 32 * 1024 * 1024


def same_file(a: Path, b: Path) -> bool:
    """Whether a and b name one file: one that exists (links included), or one still to be written."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet: the journal of a first run, written before the export)
        return Path(a).resolve() == Path(b).resolve()


def _writer_host() -> str:
    """This host, as the temporary files of writers name it: the host name and the PID namespace (containers on one
    host that share its name, `--network host`, number their processes apart)."""
    host = socket.gethostname().replace("/", "_") or "host"
    with contextlib.suppress(OSError, AttributeError):
        host += "-" + "".join(c for c in os.readlink("/proc/self/ns/pid") if c.isdigit())
    return host


_HOST = _writer_host()
NAME_MAX = 255  # bytes of a file name on Linux, macOS and Windows file systems


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_orphans(path: Path) -> None:
    """Removes the temporary files of writers of `path` that died before finishing (a SIGKILL, the OOM killer):
    `.NAME.HOST.PID.XXXXXXXX.tmp` of this host (and PID namespace) whose process is gone. Another writer's file, a
    live one's or one of another host (a shared file system), is left alone; so is anything not named exactly so."""
    if os.name != "posix":  # (os.kill(pid, 0) is no liveness test elsewhere)
        return
    own = _tmp_prefix(path) + _HOST
    try:
        names = [entry.name for entry in os.scandir(path.parent)
                 if entry.name.startswith(own + ".") and entry.name.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        head, _, _random = name[:-len(".tmp")].rpartition(".")
        writer, _, pid = head.rpartition(".")
        if writer != own or not (pid.isascii() and pid.isdigit() and len(pid) <= 10):
            continue  # e.g. host "node.5" beside this host "node": not ours to judge
        if int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path.parent / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # (PermissionError: another user's process)
        return True
    return True


@contextlib.contextmanager
def atomic_output(path: Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """A file to write that replaces `path` whole once the block ends: a temporary file of its own beside it (so
    two writers of one path never share one), synced before it replaces `path` (and the directory after, where
    the system allows), removed if the block or the write fails."""
    path = Path(path)
    _remove_orphans(path)
    prefix = _tmp_prefix(path) + f"{_HOST}.{os.getpid()}."
    if len(prefix.encode()) + 12 > NAME_MAX:  # (a long output name: the file name limit before the host and pid)
        prefix = _tmp_prefix(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an open() would create it (mkstemp: 0600)
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            fd = -1
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # (not every system or file system can sync a directory)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def export_journal(journal: Path, out: Path) -> int:
    """Writes the journal as CSV or Parquet (by out's suffix), atomically, a record at a time (a journal of
    evidence-laden records is never held whole); returns the number of rows."""
    fmt = export_format(out)
    rows = (flatten_record(r) for r in journal_records(journal))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        count = 0
        with atomic_output(out, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=export_columns())
            writer.writeheader()
            for row in rows:
                writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
                count += 1
    else:
        with atomic_output(out) as fh:
            count = _write_parquet(rows, fh)
    return count


def _write_parquet(rows: Iterable[dict[str, Any]], path: Path | IO) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {**{c: pa.string() for c in (*STRING_COLUMNS, *JSON_COLUMNS)},
             **{c: pa.float64() for c in FLOAT_COLUMNS}, **{c: pa.int64() for c in INT_COLUMNS}}
    schema = pa.schema([(name, types[name]) for name in export_columns()])
    count = 0
    chunk: list[dict[str, Any]] = []
    size = 0

    def table() -> Any:
        return pa.Table.from_pydict({name: [r[name] for r in chunk] for name in export_columns()}, schema=schema)

    with pq.ParquetWriter(path, schema) as writer:
        for row in rows:
            chunk.append(row)
            size += sum(len(v) for v in row.values() if isinstance(v, str))
            if len(chunk) >= EXPORT_CHUNK_ROWS or size >= EXPORT_CHUNK_BYTES:
                writer.write_table(table())
                count += len(chunk)
                chunk, size = [], 0
        if chunk or not count:  # (an empty journal: a file with the columns and no rows)
            writer.write_table(table())
            count += len(chunk)
    return count
