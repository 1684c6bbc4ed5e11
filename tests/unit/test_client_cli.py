"""What `evaluate`, `demo` and `split` print and how they fail: no terminal control sequences from chain text or a
server, one line and status 2 for a file or text they cannot use, no traceback for Ctrl-C while loading."""

import json

import pytest

from client import cli
from client.cli import main
from client.demo import load_chains
from client.render import printable, render_chain
from client.types import ChainScore, Evidence, StepScore

HOSTILE = "Aspirin\x1b]0;owned\x07 inhibits\x1b[2J COX\x9b31m \u202edesrever\u202c \u2066x\u2069 done\x7f"


def _raw_controls(text):
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f
            or 0x202a <= ord(c) <= 0x202e or 0x2066 <= ord(c) <= 0x2069]


def test_chain_text_and_server_values_are_printed_without_terminal_controls(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the whole hostile text on its lines, whatever terminal runs the tests
    evidence = Evidence(fact_id="kb:1\x1b[31m", text="t", source="s", score=0.5, title="", origin="kb")
    step = StepScore(index=1, text=HOSTILE + "\nsecond line", start=0, end=10, verdict="supported\x1b[0m",
                     evidence=(evidence,))
    score = ChainScore(steps=(step,), chain_text=HOSTILE, status="ok\x1b[5m", counts=None)
    shown = render_chain(score, question="Q\x1b[8m hidden?", expected=["supported\x1b[1m"])
    assert _raw_controls(shown) == []
    assert "\\x1b[2J" in shown and "\\u202e" in shown and "\\x9b" in shown and "\\x7f" in shown
    assert printable("tab\tkept, line\nbreak") == "tab\tkept, line break"
    assert printable("a\nb", one_line=False) == "a\\x0ab"


def _evaluate(*args):
    return main(["evaluate", "--question", "Q?", "--answer", "A", "--server", "127.0.0.1:1", *map(str, args)])


def test_evaluate_with_a_directory_or_a_file_that_is_not_utf8_is_one_line_and_status_2(tmp_path, capsys):
    latin1 = tmp_path / "steps.txt"
    latin1.write_bytes(b"caf\xe9 is a word\n")
    bad_json = tmp_path / "steps.json"
    bad_json.write_text('["a", 1]')
    for args, words in [(("--steps-file", tmp_path), "--steps-file {} is a directory"),
                        (("--reasoning", "Aspirin inhibits COX.", "--context-file", tmp_path),
                         "--context-file {} is a directory"),
                        (("--steps-file", latin1), "line 1 is not UTF-8 text (byte 0xe9)"),
                        (("--steps-file", bad_json), "expected a JSON list of strings")]:
        assert _evaluate(*args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and words.format(tmp_path) in err


def test_demo_chains_that_are_empty_or_not_objects_are_refused_and_ids_are_optional(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    assert main(["demo", "--chains", str(empty), "--server", "127.0.0.1:1"]) == 2
    assert "holds no chains" in capsys.readouterr().err
    listed = tmp_path / "list.jsonl"
    listed.write_text('{"id": "a", "reasoning": "x"}\n["not", "a", "chain"]\n')
    with pytest.raises(ValueError, match="line 2 is not a JSON object"):
        load_chains(listed)
    unnamed = tmp_path / "unnamed.jsonl"
    unnamed.write_text(json.dumps({"question": "Q?", "reasoning": "Aspirin inhibits COX."}) + "\n")
    assert [c["id"] for c in load_chains(unnamed)] == ["chain 1"]


@pytest.mark.parametrize("text", ["", "   \n ", "\u200b\u200b"])
def test_split_of_empty_text_is_refused_locally_as_a_server_refuses_it(text, capsys):
    assert main(["split", "--text", text]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgverify: error: INVALID_ARGUMENT [INVALID_ARGUMENT]: invalid request: reasoning: ")
    assert "the chain is empty" in err


def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["config"]) == 130


def test_a_steps_file_has_one_step_per_line_whatever_other_breaks_a_step_holds(tmp_path):
    """str.splitlines also breaks at U+2028, U+2029, form feed, vertical tab and \\x1c-\\x1e, \\x85: a step copied
    from model output with one of them became two steps."""
    path = tmp_path / "steps.txt"
    path.write_text("Heparin is reversed by protamine\u2028sulfate.\r\nIt binds\x0cheparin.\n\n  \nSo protamine.",
                    encoding="utf-8")
    assert cli._read_steps(path) == ["Heparin is reversed by protamine\u2028sulfate.", "It binds\x0cheparin.",
                                     "So protamine."]
    assert cli._read_steps(path, "--context-file")[0] == "Heparin is reversed by protamine\u2028sulfate."
    path.write_text("Heparin is an anticoagulant.\rProtamine reverses it.\r", encoding="utf-8")
    assert cli._read_steps(path) == ["Heparin is an anticoagulant.", "Protamine reverses it."]
