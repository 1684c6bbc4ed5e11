"""`kgverify batch` input reading: a row it cannot read is that row's error naming its line, a file that breaks off
midway stops the run naming where, and long CSV cells are read."""

import gzip
import json

import pytest

from client.batch_io import InputError, RowError, read_rows
from client.cli import main


def _batch(*args):
    return main(["batch", "--no-progress", *map(str, args)])


def test_a_jsonl_line_with_a_number_python_will_not_convert_is_its_own_row_error(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": ' + "9" * 5000 + ', "reasoning": "x"}\n{"id": "b", "reasoning": "y"}\n')
    rows = dict(read_rows(source))
    bad = rows["line-1"]
    assert isinstance(bad, RowError) and bad.reason == "INVALID_JSON" and "line 1" in str(bad)
    assert rows["line-2"] == {"id": "b", "reasoning": "y"}


def test_a_csv_list_cell_with_a_number_python_will_not_convert_is_its_own_row_error(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text('id,steps\na,"[' + "9" * 5000 + ']"\nb,"[""ok""]"\n')
    rows = dict(read_rows(source))
    assert isinstance(rows["row-1"], RowError) and "row 1" in str(rows["row-1"])
    assert rows["row-2"] == {"id": "b", "steps": ["ok"]}


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    source = tmp_path / "rows.csv"
    long = "Aspirin inhibits COX. " * 10_000  # 220,000 characters; the csv module stops at 131,072 by default
    source.write_text(f"id,reasoning\na,{long}\nb,short\n")
    rows = dict(read_rows(source))
    assert rows["row-1"] == {"id": "a", "reasoning": long} and rows["row-2"]["id"] == "b"


def _truncated_gzip(path, lines):
    data = gzip.compress("".join(json.dumps({"id": f"r{i}", "reasoning": f"step {i} " * 50}) + "\n"
                                 for i in range(lines)).encode())
    path.write_bytes(data[:len(data) // 2])


def test_a_gzip_file_that_breaks_off_midway_is_an_input_error_naming_where(tmp_path):
    source = tmp_path / "rows.jsonl.gz"
    _truncated_gzip(source, 2000)
    with pytest.raises(InputError) as info:
        for _ in read_rows(source):
            pass
    message = str(info.value)
    assert str(source) in message and "after line" in message and "end-of-stream" in message


def test_a_truncated_gzip_input_stops_the_run_with_status_2_before_any_record(tmp_path, capsys):
    source = tmp_path / "rows.jsonl.gz"
    _truncated_gzip(source, 2000)
    out = tmp_path / "out.jsonl"
    assert _batch("--input", source, "--output", out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "batch failed:" in err and "after line" in err
    assert not out.exists()
