"""`kgverify kb search DIR QUERY -k 0` printed nothing and exited 0, as if the KB held nothing on the query; it is
now a bad option (exit 2), as a negative -k was."""

from kb.cli import main


def test_kb_search_needs_at_least_one_fact(tmp_path, capsys):
    assert main(["search", str(tmp_path), "warfarin", "-k", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "kgverify kb: error: -k 0 asks for no facts: give at least 1 (facts to return)" in captured.err
