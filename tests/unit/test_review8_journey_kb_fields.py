"""`kgverify kb build` on MedQuAD rows (the text under 'answer') said only "the inputs hold no document text (check
--text-field and the input files)"; it now also names the fields of the first row, so the field to map is at hand
(a CSV already named its columns)."""

import gzip
import json

import pytest

from kb.cli import main


@pytest.mark.parametrize("name", ["medquad.jsonl", "medquad.jsonl.gz"])
def test_no_document_text_names_the_first_rows_fields(tmp_path, capsys, name):
    rows = [{"qid": "1", "question": "What is glaucoma?", "answer": "Glaucoma damages the optic nerve."}]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert main(["build", "--no-progress", "--input", str(path), "--output", str(tmp_path / "kb")]) == 2
    err = capsys.readouterr().err
    assert ("kgverify kb: error: the inputs hold no document text (check --text-field and the input files); "
            f"--text-field is 'text', and the first row of {path} has the fields: qid, question, answer") in err, err
