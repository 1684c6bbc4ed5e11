"""A Parquet input with text that is not UTF-8, or a page pyarrow cannot read, names the file and the row: the row
gets its own INVALID_UTF8 record, as a JSONL line does; a damaged page stops the run before anything is sent."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client import batch_io
from client.batch_io import InputError, RowError, read_rows
from client.cli import main


def _not_utf8(texts: list[bytes]) -> pa.Array:
    """A string column holding the bytes as they are (pyarrow checks UTF-8 on a cast, not on a view)."""
    return pa.array(texts, pa.binary()).view(pa.string())


def _write(path, ids, questions, steps):
    table = pa.table({"id": ids, "question": questions, "steps": steps, "answer": ["B"] * len(ids)})
    pq.write_table(table, path)
    return path


def test_a_parquet_row_whose_text_is_not_utf8_is_its_own_row_error_keeping_its_id(tmp_path):
    steps = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), _not_utf8([b"ok", b"caf\xe9", b"fine"]))
    path = _write(tmp_path / "in.parquet", ["a", "b", "c"],
                  _not_utf8([b"q", b"q", b"\xff"]), steps)
    rows = list(read_rows(path))
    assert [label for label, _ in rows] == ["row-1", "row-2", "row-3"]
    assert rows[0][1] == {"id": "a", "question": "q", "steps": ["ok"], "answer": "B"}
    second, third = rows[1][1], rows[2][1]
    assert isinstance(second, RowError) and second.reason == "INVALID_UTF8" and second.row_id == "b"
    assert str(second) == "row 2: column 'steps' holds text that is not UTF-8; save the file's text as UTF-8"
    assert isinstance(third, RowError) and third.row_id == "c" and "column 'question'" in str(third)


def test_a_run_over_parquet_rows_that_are_not_utf8_journals_each_with_its_row(tmp_path, capsys):
    path = _write(tmp_path / "in.parquet", ["a", "b"], _not_utf8([b"\xff", b"\xc3("]), [["x"], ["y"]])
    out = tmp_path / "out.jsonl"
    assert main(["batch", "--no-progress", "--input", str(path), "--output", str(out)]) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["status"]["reason"]) for r in records] == [("a", "INVALID_UTF8"), ("b", "INVALID_UTF8")]
    assert records[1]["status"]["message"].startswith("row 2: column 'question' holds text that is not UTF-8")


class _DamagedAfterOneBatch:
    """A Parquet file whose second page pyarrow cannot decode (as a flipped byte in a dictionary page does)."""

    def __init__(self, path):
        self.file = pq.ParquetFile(path)
        self.schema_arrow = self.file.schema_arrow

    def iter_batches(self, batch_size):
        yield from self.file.iter_batches(batch_size=1)
        raise pa.ArrowInvalid("Index not in dictionary bounds")


def test_a_parquet_page_pyarrow_cannot_decode_stops_the_run_naming_the_file_and_row(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path / "in.parquet", ["a"], ["q"], [["x"]])
    monkeypatch.setattr(batch_io, "_parquet_file", _DamagedAfterOneBatch)
    with pytest.raises(InputError, match=r"in\.parquet: cannot be read after row 1 \(not readable as Parquet: "
                                         r"Index not in dictionary bounds\); repair or replace the file"):
        list(read_rows(path))
    out = tmp_path / "out.jsonl"
    assert main(["batch", "--no-progress", "--input", str(path), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"batch failed: {path}: cannot be read after row 1 (not readable as Parquet")
    assert not out.exists()
