"""A dataset given to batch as downloaded (MedBullets / MedQA rows carry 'realidx', not 'id') made every row a
MISSING_ID record and exited 0. A run none of whose rows has an id now stops before
anything is written (exit 2), naming the fields its rows have."""

import json

from client.cli import main


def test_rows_none_of_which_has_an_id_stop_the_run_before_anything_is_written(tmp_path, capsys):
    source, out = tmp_path / "medbullets.jsonl", tmp_path / "out.jsonl"
    rows = [{"realidx": i, "question": "q", "answer": "Acetazolamide", "options": {"A": "Acetazolamide"},
             "reason": "Acetazolamide lowers intraocular pressure."} for i in range(3)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out),
            "--server", "unix:///nonexistent/kgv.sock"]  # (a run that got as far as sending would fail here)
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch failed: none of the 3 rows in {source} has an 'id' (its first row's fields: realidx, question, "
        "answer, options, reason): give each row its own 'id' (a string or a whole number); nothing was written")
    assert not out.exists()


def test_some_rows_without_an_id_still_get_their_records(tmp_path, capsys):
    source, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"question": "no id", "reasoning": "x"}) + "\n")
    out.write_text(json.dumps({"id": "a", "status": "ok"}) + "\n")  # a journal with the other rows done
    source.write_text(json.dumps({"id": "a", "reasoning": "x"}) + "\n" + source.read_text())
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[-1]["status"]["reason"] == "MISSING_ID"


def test_rows_none_of_which_has_a_usable_id_stop_the_run_naming_the_first_problem(tmp_path, capsys):
    """Ids read as floats (a Parquet or pandas id column with a gap: 1.0, 2.0, ...) made every row an INVALID_ID
    record and exited 0; once the ids were fixed, those records stayed beside the rows' own in report and export."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, out = tmp_path / "rows.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.Table.from_pylist([{"id": float(i), "question": "q", "reasoning": "x"} for i in (1, 2)]
                                        + [{"id": None, "question": "q", "reasoning": "x"}]), source)
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out),
            "--server", "unix:///nonexistent/kgv.sock"]  # (a run that got as far as sending would fail here)
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"batch failed: none of the 3 rows in {source} has a usable 'id' (2 invalid, 1 missing)")
    assert "not float 1.0 (a column of whole numbers with gaps is read as floats" in last
    assert last.endswith("nothing was written") and not out.exists()
