"""`kgverify batch --export scores.csv` wrote the file without a word (report names each file it writes); the run
now says "wrote FILE" for each export, before its summary line."""

import json

from client.cli import main


def test_batch_names_each_export_it_writes(tmp_path, capsys):
    source, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"id": "a", "reasoning": "x"}) + "\n")
    out.write_text(json.dumps({"id": "a", "status": "ok", "knowledge_index": 1.0}) + "\n")  # (done: nothing to send)
    csv, parquet = tmp_path / "scores.csv", tmp_path / "scores.parquet"
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out),
                 "--export", str(csv), "--export", str(parquet)]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert f"wrote {csv}" in lines and f"wrote {parquet}" in lines
    assert json.loads(lines[-1])["rows"] == 1
    assert csv.exists() and parquet.exists()
