"""Batch rows with numeric answers, and output options that name a directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from client.errors import VerifierError
from client.requests import chain_request

from tests.conftest import REPO


def test_a_whole_number_answer_is_scored_as_its_decimal_text():
    """GSM8K-style rows ("answer": 42) and int Parquet columns were refused: 'answer: must be a string, not int'."""
    request = chain_request({"question": "How many?", "reasoning": "6 times 7 is 42.", "answer": 42,
                             "gold_answer": -3, "choices": [41, "42", 43]})
    assert (request.answer, request.gold_answer, list(request.choices)) == ("42", "-3", ["41", "42", "43"])


@pytest.mark.parametrize("row, field", [({"answer": 2.5}, "answer"), ({"gold_answer": True}, "gold_answer"),
                                        ({"choices": [1, 2.0]}, "choices"), ({"choices": [True]}, "choices")])
def test_fractions_and_booleans_are_still_refused_naming_the_field(row, field):
    with pytest.raises(VerifierError) as caught:
        chain_request({"reasoning": "x", **row})
    assert caught.value.field_violations[0][0] == field
    if field == "answer":
        assert '"2.5"' in caught.value.message  # says how to write it


@pytest.mark.parametrize("args", [["batch", "--input", "rows.jsonl", "--output", "results/"],
                                  ["batch", "--input", "rows.jsonl", "--output", "out.jsonl", "--export", "exp/"],
                                  ["report", "a.jsonl", "--json", "stats/"],
                                  ["report", "a.jsonl", "--html", "site/"]])
def test_an_output_file_option_ending_in_a_slash_is_refused(tmp_path, args):
    """argparse's Path drops the trailing slash: `--output results/` wrote a file named `results`."""
    run = subprocess.run([sys.executable, "-m", "client.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert run.returncode == 2
    assert "names a directory: give a file in it" in run.stderr
    assert not any(tmp_path.iterdir())  # nothing written
