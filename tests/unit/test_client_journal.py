"""`kgverify batch --output` takes only a missing path or a batch journal: anything else (the input itself, a
dataset, a directory, a pipe, a device) is refused with status 2 before a byte is written."""

import json
import os
import socket

import pytest

from client.batch import BatchStopped, Journal
from client.cli import main

ROWS = [{"id": f"r{i}", "question": "Q?", "steps": ["Protamine sulfate neutralizes heparin."], "answer": "A"}
        for i in range(3)]


def _refused_address():
    with socket.socket() as sock:  # nothing listens there: a run that got past the checks would say so
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _batch(source, out, *more):
    return main(["batch", "--no-progress", "--input", str(source), "--output", str(out), "--server",
                 _refused_address(), *map(str, more)])


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))  # no final newline, as hand-made JSONL often has
    return path


def test_output_the_same_file_as_input_is_refused_and_left_as_it_is(dataset, tmp_path, capsys):
    before = dataset.read_bytes()
    assert _batch(dataset, dataset) == 2
    link = tmp_path / "link.jsonl"
    link.symlink_to(dataset)
    assert _batch(dataset, link) == 2
    assert dataset.read_bytes() == before
    assert "is the input file" in capsys.readouterr().err


@pytest.mark.parametrize("content", [
    "\n".join(json.dumps(r) for r in ROWS),  # another dataset, unterminated
    "".join(json.dumps(r) + "\n" for r in ROWS),  # another dataset
    "id,question\nr0,Q?\n",  # a CSV
    '{"id": "r0", "question": "Q?"',  # an unterminated line that is not the start of a record
    json.dumps({"id": "r0", "status": "ok"}) + "\n" + json.dumps(ROWS[1]) + "\n",  # a record, then a row
])
def test_output_that_is_not_a_journal_is_refused_and_left_as_it_is(dataset, tmp_path, capsys, content):
    other = tmp_path / "other.jsonl"
    other.write_text(content)
    assert _batch(dataset, other) == 2
    assert other.read_text() == content
    assert "is not a kgverify batch journal" in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("torn", [b'{"id": "r0", "sta', b'{"id": "r', b"{"])
def test_a_journal_whose_only_line_was_cut_off_is_recovered_empty(tmp_path, torn):
    path = tmp_path / "out.jsonl"
    path.write_bytes(torn)
    journal = Journal(path)
    journal.close()
    assert journal.done == set() and path.read_bytes() == b""


def test_a_journal_with_a_torn_last_line_keeps_its_records(tmp_path):
    path = tmp_path / "out.jsonl"
    good = json.dumps({"id": "r0", "status": "ok"}) + "\n" + json.dumps({"id": "r1", "status": {"code": "X"}}) + "\n"
    path.write_text(good + '{"id": "r2", "status": "o')
    journal = Journal(path)
    journal.close()
    assert (journal.done, journal.failed) == ({"r0"}, {"r1"}) and path.read_text() == good


def test_output_a_directory_pipe_or_device_is_refused_at_once(dataset, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (tmp_path, fifo, "/dev/null"):
        assert _batch(dataset, target) == 2  # a pipe: no wait for a reader
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "is a directory" in err or "is not a regular file" in err
        assert "Traceback" not in err
    with pytest.raises(BatchStopped):
        Journal(fifo)


def test_export_the_input_or_the_journal_or_an_unwritable_place_is_refused_before_the_run(dataset, tmp_path,
                                                                                           capsys):
    out = tmp_path / "out.jsonl"
    csv_input = tmp_path / "rows.csv"
    csv_input.write_text("id,question\nr0,Q?\n")
    assert _batch(csv_input, out, "--export", csv_input) == 2
    assert "is the input file" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert _batch(dataset, out, "--export", tmp_path / "file" / "scores.csv") == 2  # under a file
    assert "cannot write in" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: every directory is writable")
        assert _batch(dataset, out, "--export", locked / "scores.csv") == 2
        assert "cannot write in" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)
    (tmp_path / "adir.csv").mkdir()
    assert _batch(dataset, out, "--export", tmp_path / "adir.csv") == 2
    assert "is a directory" in capsys.readouterr().err
    assert not out.exists() and csv_input.read_text() == "id,question\nr0,Q?\n"
