"""`kgverify batch` reads what it can row by row and rejects, before scoring, what it cannot read at all."""

import gzip
import json

import pytest

from client.batch import parse_metrics
from client.batch_io import InputError, RowError, check_input, read_rows
from client.cli import main


def _batch(*args):
    return main(["batch", "--no-progress", *map(str, args)])


def test_csv_with_a_utf8_byte_order_mark_has_an_id_column(tmp_path):
    source = tmp_path / "excel.csv"
    source.write_bytes(b"\xef\xbb\xbfid,question,reasoning\r\na1,Q?,Aspirin inhibits COX.\r\n")
    rows = dict(read_rows(source))
    assert rows["row-1"] == {"id": "a1", "question": "Q?", "reasoning": "Aspirin inhibits COX."}


def test_a_jsonl_line_that_is_not_utf8_is_its_own_row_error_and_keeps_its_id(tmp_path):
    source = tmp_path / "rows.jsonl.gz"
    with gzip.open(source, "wb") as fh:
        fh.write(b'\xef\xbb\xbf{"id": "a", "reasoning": "ok"}\n'
                 b'{"id": "b", "reasoning": "caf\xe9"}\n'
                 b'{"id": "c\xff", "reasoning": "x"}\n'
                 b'{"id": "d", "reasoning": "fine"}\n')
    rows = dict(read_rows(source))
    assert rows["line-1"] == {"id": "a", "reasoning": "ok"} and rows["line-4"]["id"] == "d"
    bad = rows["line-2"]
    assert isinstance(bad, RowError) and bad.reason == "INVALID_UTF8" and bad.row_id == "b"
    assert "line 2" in str(bad) and "0xe9" in str(bad)
    assert rows["line-3"].row_id is None  # the id itself is not readable


@pytest.mark.parametrize("name", ["rows.tsv", "rows.txt", "rows", "rows.xlsx", "rows.parquet.gz"])
def test_a_file_name_batch_cannot_read_is_rejected_naming_the_formats(tmp_path, name):
    source = tmp_path / name
    source.write_text('{"id": "a"}\n')
    with pytest.raises(InputError, match=r"\.jsonl, \.jsonl\.gz, \.csv, \.csv\.gz or \.parquet"):
        check_input(source)
    if not name.endswith(".gz"):
        assert check_input(source, "jsonl") == "jsonl"  # --input-format overrides a misleading name


def test_a_json_array_is_rejected_as_not_jsonl(tmp_path):
    source = tmp_path / "rows.json"
    source.write_text(json.dumps([{"id": "a"}, {"id": "b"}], indent=2))
    with pytest.raises(InputError, match="JSONL expected: one object per line"):
        check_input(source)
    source.write_text('{"id": "a"}\n{"id": "b"}\n')  # .json holding JSONL is read
    assert [r["id"] for _, r in read_rows(source)] == ["a", "b"]


def test_a_csv_without_an_id_column_is_rejected_listing_its_columns(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("qid,question\n1,Q?\n")
    with pytest.raises(InputError, match=r"no column 'id' \(columns: \['qid', 'question'\]\)"):
        check_input(source)


def test_a_csv_that_is_not_utf8_names_the_file_and_line(tmp_path):
    source = tmp_path / "latin1.csv"
    source.write_bytes("id,question\na1,ok\na2,café\n".encode("latin-1") + b"a3,ok\n" * 5000)
    with pytest.raises(InputError) as err:
        list(read_rows(source))
    assert str(source) in str(err.value) and "line 3 is not UTF-8" in str(err.value)


def test_metrics_are_case_insensitive_and_unknown_ones_are_rejected():
    assert parse_metrics("KI, InfoGain,ki") == ("ki", "infogain")
    with pytest.raises(ValueError, match="unknown metric 'foo'"):
        parse_metrics("ki,foo")
    with pytest.raises(ValueError, match="no metric"):
        parse_metrics(" , ")


@pytest.mark.parametrize("args, message", [
    (["--metrics", "foo"], "unknown metric 'foo'"),
    (["--export", "scores.xlsx"], "cannot export to scores.xlsx: give a .csv or .parquet file"),
    (["--concurrency", "0"], "must be at least 1, not 0"),
    (["--concurrency", "-3"], "must be at least 1, not -3"),
])
def test_run_wide_mistakes_are_rejected_by_argument_parsing(tmp_path, capsys, args, message):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"id": "a", "question": "q", "reasoning": "r", "answer": "a"}\n')
    with pytest.raises(SystemExit) as exit_:
        _batch("--input", source, "--output", out, "--server", "127.0.0.1:1", *args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name, content, message", [
    ("rows.tsv", "id\tquestion\na\tq\n", "cannot read rows.tsv"),
    ("rows.json", '[{"id": "a"}]', "JSONL expected: one object per line"),
    ("rows.csv", "\ufeffqid,question\n1,q\n", "no column 'id' (columns: ['qid', 'question'])"),
])
def test_an_input_file_batch_cannot_read_stops_the_run_before_any_record(tmp_path, capsys, name, content,
                                                                        message):
    source, out = tmp_path / name, tmp_path / "out.jsonl"
    source.write_text(content, encoding="utf-8")
    assert _batch("--input", source, "--output", out, "--server", "127.0.0.1:1") == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


ROW_TEXT = "".join(json.dumps({"id": f"r{i}", "question": "Q?", "reasoning": "Aspirin inhibits COX."}) + "\r\n"
                   for i in range(3))


@pytest.mark.parametrize("name, data, words", [  # mtime=0: the same test ids in every worker
    ("rows.jsonl", ROW_TEXT.encode("utf-16"), "is UTF-16 text"),  # PowerShell's `>`: a BOM, then UTF-16LE
    ("rows.csv", ("id,question\r\nr0,Q?\r\n").encode("utf-16-be"), "holds NUL bytes"),  # no BOM
    ("rows.jsonl", ROW_TEXT.encode("utf-32"), "is UTF-32 text"),
    ("rows.jsonl", gzip.compress(ROW_TEXT.encode(), mtime=0), "is gzip-compressed: name it with .gz"),
    ("rows.jsonl.gz", gzip.compress(ROW_TEXT.encode("utf-16"), mtime=0), "is UTF-16 text"),
])
def test_text_that_is_not_utf8_as_a_whole_stops_the_run_before_anything_is_written(tmp_path, capsys, name, data,
                                                                                  words):
    source, out = tmp_path / name, tmp_path / "out.jsonl"
    source.write_bytes(data)
    with pytest.raises(InputError, match=words):
        check_input(source)
    assert _batch("--input", source, "--output", out, "--server", "127.0.0.1:1") == 2
    assert words in capsys.readouterr().err and not out.exists()


def test_a_line_nested_too_deeply_is_its_own_row_error(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": "a"}\n{"id": "b", "context": ' + "[" * 100_000 + "]" * 100_000 + "}\n{\"id\": \"c\"}\n")
    rows = dict(read_rows(source))
    assert rows["line-1"] == {"id": "a"} and rows["line-3"] == {"id": "c"}
    assert rows["line-2"].reason == "INVALID_JSON" and "nested too deeply" in str(rows["line-2"])
