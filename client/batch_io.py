"""Batch dataset formats: JSONL, CSV and Parquet rows in; CSV or Parquet exported from the JSONL journal."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterator

INPUT_FORMATS = ("jsonl", "csv", "parquet")
EXPORT_FORMATS = ("csv", "parquet")
# Row fields that hold lists; CSV cells carry them as JSON text.
LIST_FIELDS = ("steps", "context", "choices")
# Export columns in this order; nested values become JSON strings so every cell is a scalar.
FLOAT_COLUMNS = ("knowledge_index", "knowledge_index_paper", "coverage", "info_gain", "info_gain_total",
                 "info_gain_paper")
INT_COLUMNS = ("error_steps", "first_error_step", "llm_calls", "n_steps")
STRING_COLUMNS = ("id", "group", "question_id", "status", "status_code", "status_reason", "status_message",
                  "target", "estimator")
JSON_COLUMNS = ("counts", "steps", "provenance")


class RowError(ValueError):
    """An input row that cannot be read (it gets an INVALID_ARGUMENT record of its own)."""

    def __init__(self, message: str, reason: str = "INVALID_ROW", row_id: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.row_id = row_id  # when the row's id could still be read


def input_format(path: Path, explicit: str | None = None) -> str:
    """The input format: explicit, or from the file name (.csv, .parquet/.pq, anything else JSONL)."""
    if explicit:
        if explicit not in INPUT_FORMATS:
            raise ValueError(f"unknown input format {explicit!r} (known: {', '.join(INPUT_FORMATS)})")
        return explicit
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(last, "jsonl")


def read_rows(path: Path, fmt: str | None = None) -> Iterator[tuple[str, Any]]:
    """(row label, row dict or the RowError that kept it from being read) for each row of the dataset."""
    fmt = input_format(path, fmt)
    if fmt == "csv":
        yield from _csv_rows(path)
    elif fmt == "parquet":
        yield from _parquet_rows(path)
    else:
        yield from _jsonl_rows(path)


def _open_text(path: Path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line-{lineno}", RowError(f"line {lineno} is not valid JSON: {exc}", "INVALID_JSON")
                continue
            yield f"line-{lineno}", row if isinstance(row, dict) else RowError(f"line {lineno} is not a JSON object")


def _csv_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        for number, raw in enumerate(reader, 1):
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
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise RowError(f"row {number}: column {key!r} must hold a JSON list") from None
    if not isinstance(parsed, list):
        raise RowError(f"row {number}: column {key!r} must hold a JSON list")
    return parsed


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for raw in batch.to_pylist():
            number += 1
            yield f"row-{number}", {k: v for k, v in raw.items() if v is not None}


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
        "estimator": record.get("estimator"),
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
    return None if value is None else str(value)


def export_columns() -> list[str]:
    return [*STRING_COLUMNS, *FLOAT_COLUMNS, *INT_COLUMNS, *JSON_COLUMNS]


def is_error_record(record: dict[str, Any]) -> bool:
    """Whether a journal record is a row's error (status {code, reason, message}) rather than its result."""
    return isinstance(record.get("status"), dict)


def _complete_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every complete record (a torn last line is not a record)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                yield number, record


def journal_records(path: Path) -> Iterator[dict[str, Any]]:
    """One record per row id, in journal order: the last complete record written for it (a row scored again
    with `kgverify batch --retry-errors` replaces its error record). Two passes, so memory stays one line
    number per id however large the journal."""
    last = {record["id"]: number for number, record in _complete_records(path)}
    for number, record in _complete_records(path):
        if last.get(record["id"]) == number:  # (a record appended between the passes is left out)
            yield record


def export_journal(journal: Path, out: Path) -> int:
    """Writes the journal as CSV or Parquet (by out's suffix), atomically; returns the number of rows."""
    fmt = input_format(out)
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export to .csv or .parquet, not {out.name}")
    rows = [flatten_record(r) for r in journal_records(journal)]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if fmt == "csv":
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=export_columns())
            writer.writeheader()
            writer.writerows(rows)
    else:
        _write_parquet(rows, tmp)
    os.replace(tmp, out)
    return len(rows)


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {**{c: pa.string() for c in (*STRING_COLUMNS, *JSON_COLUMNS)},
             **{c: pa.float64() for c in FLOAT_COLUMNS}, **{c: pa.int64() for c in INT_COLUMNS}}
    schema = pa.schema([(name, types[name]) for name in export_columns()])
    table = pa.Table.from_pydict({name: [r[name] for r in rows] for name in export_columns()}, schema=schema)
    pq.write_table(table, path)
