"""A CSV quote that is never closed stops the run naming where (it used to take every later row as its text, and
those rows were lost without a word); a CSV error names the line it is on."""

import pytest

from client.batch_io import InputError, read_rows
from client.cli import main

HEADER = "id,question,reasoning,answer\n"
NOWHERE = "unix:///nonexistent/kgv.sock"  # (a run that got as far as sending rows would fail at once here)


@pytest.mark.parametrize("rows, line", [
    ('a,"oops,Protamine reverses heparin.,B\nb,q,Heparin thins blood.,B\nc,q,Aspirin inhibits COX.,B\n', 2),
    ('a,q,Protamine reverses heparin.,B\nb,"a cell on\ntwo lines",x,B\nc,q,"no end,B\nd,q,x,B\n', 5),
])
def test_a_quoted_cell_that_is_never_closed_stops_the_run_before_anything_is_written(tmp_path, capsys, rows, line):
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    source.write_text(HEADER + rows)
    with pytest.raises(InputError, match=f"the row from line {line} on has a quoted cell that is never closed"):
        list(read_rows(source))
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch failed: {source}: the row from line {line} on has a quoted cell that is never closed: it runs to the "
        "end of the file and would take the rows after it as its text; fix its quotes")
    assert not out.exists()


def test_a_csv_error_names_the_line_it_is_on(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(HEADER + "a,q,x,B\nb,q,x,B\nc,\"q\"x,y,B\n")
    with pytest.raises(InputError, match=r"in\.csv: line 4: not readable as CSV \(',' expected after '\"'\)"):
        list(read_rows(source))


def test_a_cell_on_several_lines_and_quotes_inside_a_cell_are_read_as_before(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(HEADER + 'a,"two\nlines","say ""hi""",B\nb,it is "quoted" inside,x,B\n')
    assert [row for _, row in read_rows(source)] == [
        {"id": "a", "question": "two\nlines", "reasoning": 'say "hi"', "answer": "B"},
        {"id": "b", "question": 'it is "quoted" inside', "reasoning": "x", "answer": "B"}]


@pytest.mark.parametrize("header, hint", [
    ("id, question, reasoning, answer", "; the names [' question', ' reasoning', ' answer'] have spaces around them: "
                                        "write the header without spaces after the commas"),
    ("id,question,chain,answer", ""),
])
def test_a_csv_without_a_chain_column_stops_the_run_before_any_row_is_sent(tmp_path, capsys, header, hint):
    source, out = tmp_path / "in.csv", tmp_path / "out.jsonl"
    source.write_text(header + "\na, q, Protamine reverses heparin., B\nb, q, Aspirin inhibits COX., B\n")
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out), "--server", NOWHERE]) == 2
    columns = header.split(",")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch failed: {source}: no column 'reasoning' or 'steps' (columns: {columns}): every row needs its "
        f"reasoning chain, as text or as a JSON list of steps{hint}")
    assert not out.exists()


def test_a_parquet_file_without_a_chain_column_stops_the_run_naming_its_columns(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, out = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.table({"id": ["a"], "question": ["q"], "text": ["Protamine reverses heparin."]}), source)
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out), "--server", NOWHERE]) == 2
    assert "no column 'reasoning' or 'steps' (columns: ['id', 'question', 'text'])" in capsys.readouterr().err
    assert not out.exists()
