"""`kgverify evaluate --answer B` without the options scored InfoGain for the text "B" (the likelihood of the
letter, whatever option B says) without a word; it now says so and points to --choice."""

import pytest

from client.cli import main

UNREACHABLE = "unix:///nonexistent/kgv.sock"  # (the warning comes before any call)
NOTE = "names an option by its letter, but no --choice was given: InfoGain targets the text itself"


@pytest.fixture(autouse=True)
def quick_unreachable(monkeypatch):
    """The unreachable server is given up on at once (the CLI waits 3 s for a server to answer)."""
    import client.batch
    import client.readiness

    monkeypatch.setattr(client.readiness, "CONNECT_TIMEOUT_S", 0.2)
    monkeypatch.setattr(client.batch, "CONNECT_TIMEOUT_S", 0.2)


@pytest.mark.parametrize("answer", ["B", "(c)", "D."])
def test_a_letter_answer_without_options_is_pointed_out(capsys, answer):
    assert main(["evaluate", "--question", "Q", "--reasoning", "So the answer is B.", "--answer", answer,
                 "--server", UNREACHABLE]) == 2
    assert f"--answer {answer!r} {NOTE}" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--answer", "Vitamin K"], ["--answer", "B", "--choice", "x", "--choice", "y"],
                                   ["--answer", "B", "--metrics", "ki"]])
def test_no_note_for_an_answer_text_with_options_or_without_infogain(capsys, extra):
    assert main(["evaluate", "--question", "Q", "--reasoning", "So the answer is B.", *extra,
                 "--server", UNREACHABLE]) == 2
    assert NOTE not in capsys.readouterr().err


def test_batch_points_out_rows_answering_with_a_letter_without_their_options(tmp_path, capsys):
    import json

    source, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    rows = [{"id": "a", "question": "q", "reasoning": "So the answer is B.", "answer": "B"},
            {"id": "b", "question": "q", "reasoning": "So the answer is B.", "answer": "B", "choices": ["x", "y"]},
            {"id": "c", "question": "q", "reasoning": "Vitamin K reverses warfarin.", "answer": "Vitamin K"}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out),
                 "--server", UNREACHABLE]) == 2
    assert ("note: 1 of the rows to score answer with an option letter ('B') but have no 'choices': their InfoGain "
            "targets the letter itself") in capsys.readouterr().err
