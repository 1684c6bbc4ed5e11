"""An empty --steps-file loaded every model and then failed as an empty chain; an empty --context-file was dropped,
so the chain was judged against the knowledge base instead of the passages meant. Both are now one line, exit
status 2, before anything loads."""

import pytest

from client.cli import main


@pytest.mark.parametrize("option, name, text, what", [
    ("--steps-file", "steps.txt", "\n  \n", "steps"), ("--steps-file", "steps.json", "[]", "steps"),
    ("--context-file", "context.txt", "", "passages"), ("--context-file", "context.json", '[" "]', "passages")])
def test_a_file_without_items_is_refused_before_anything_loads(tmp_path, capsys, option, name, text, what):
    path = tmp_path / name
    path.write_text(text)
    chain = ["--reasoning", "Aspirin inhibits COX."] if option == "--context-file" else []
    assert main(["evaluate", "--question", "Q", "--answer", "A", *chain, option, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"kgverify: error: {option} {path} holds no {what}" in err, err
    assert "starting the embedded verifier" not in err
