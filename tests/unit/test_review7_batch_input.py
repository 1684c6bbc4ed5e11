"""Pretty-printed JSON given as batch input (a .json file: one object, or a list under a key, spread over lines)
stops the run before anything is written, instead of journaling every line of it as a bad row."""

import json

import pytest

from client.batch_io import RowError, check_input, read_rows
from client.cli import main

ROWS = [{"id": f"r{i}", "question": "q", "reasoning": "Protamine reverses heparin.", "answer": "B"} for i in range(3)]


@pytest.mark.parametrize("text, second", [
    (json.dumps({"data": ROWS}, indent=2), '\'"data": [\''),
    ("\n".join(json.dumps(row, indent=4) for row in ROWS), '\'"id": "r0",\''),
])
def test_pretty_printed_json_stops_the_run_before_anything_is_written(tmp_path, capsys, text, second):
    source, out = tmp_path / "rows.json", tmp_path / "out.jsonl"
    source.write_text("\ufeff" + text + "\n")
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch failed: {source} holds JSON spread over several lines (pretty-printed: its first lines are '{{' and "
        f"{second}); JSONL expected: one object per line (e.g. jq -c . rows.json > rows.jsonl, or jq -c '.KEY[]' "
        "rows.json > rows.jsonl for the rows in a list under KEY)")
    assert not out.exists()


def test_a_jsonl_whose_first_line_is_cut_short_is_read_row_by_row(tmp_path):
    source = tmp_path / "rows.jsonl"
    source.write_text('{"id": "r0", "question": \n' + "".join(json.dumps(row) + "\n" for row in ROWS[1:]))
    assert check_input(source) == "jsonl"
    rows = list(read_rows(source))
    assert isinstance(rows[0][1], RowError) and rows[0][1].reason == "INVALID_JSON"
    assert [row for _, row in rows[1:]] == ROWS[1:]


def test_rows_none_of_which_has_a_chain_stop_the_run_before_any_is_sent(tmp_path, capsys):
    source, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": "a", "question": "q", "cot": "Protamine reverses heparin.", "answer": "B"},
            {"id": "b", "question": "q", "rationale": "Aspirin inhibits COX.", "answer": "B"},
            {"question": "no id"}]  # (a row with its own error record is no row to score)
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out),
            "--server", "unix:///nonexistent/kgv.sock"]  # (a run that got as far as sending would fail here)
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch failed: none of the 2 rows to score in {source} has a reasoning chain: give each row's chain as "
        "'reasoning' (text) or 'steps' (a list of strings); nothing was sent")
    assert not out.exists()
