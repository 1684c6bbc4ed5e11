"""evaluate, batch and demo run without --server against the bundled demo KB (a few hundred facts) and never said
so; a user who built a KB with `kgverify kb build` had no option to judge against it (only KGV_KB__PATH, or serve
--kb and --server). Now they say which KB they judge against, and take --kb DIR."""

import json

import pytest

from client.cli import main
from server.backends import registry
from tests.fakes.backends import FakeEstimator, FakeJudge

FACTS = [{"id": "eye-1", "text": "Acetazolamide is a carbonic anhydrase inhibitor that lowers intraocular pressure."},
         {"id": "eye-2", "text": "Acute angle-closure glaucoma presents with a painful red eye and a mid-dilated pupil."}]
CHAIN = ["--question", "What lowers eye pressure?", "--reasoning", "Acetazolamide lowers intraocular pressure.",
         "--answer", "Acetazolamide"]


@pytest.fixture
def fast_models(cache_dir, demo_kb_path, monkeypatch):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    monkeypatch.setenv("KGV_KB__CACHE_DIR", str(cache_dir))  # the demo KB the session built


@pytest.fixture(scope="module")
def own_kb(tmp_path_factory):
    work = tmp_path_factory.mktemp("own-kb")
    (work / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in FACTS))
    assert main(["kb", "build", "--no-progress", "--input", str(work / "facts.jsonl"),
                 "--output", str(work / "kb")]) == 0
    return work / "kb"


def test_evaluate_says_it_judges_against_the_demo_kb(fast_models, demo_kb_path, capsys):
    assert main(["evaluate", *CHAIN, "--json"]) == 0
    err = capsys.readouterr().err
    assert "the bundled demo KB (" in err and "kgverify kb build" in err and "--kb DIR" in err, err
    assert f"kgverify kb search {demo_kb_path} QUERY shows them" in err, err


def test_evaluate_and_batch_judge_against_the_kb_given_with_kb(fast_models, own_kb, tmp_path, capsys):
    capsys.readouterr()
    assert main(["evaluate", *CHAIN, "--json", "--kb", str(own_kb)]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert {e["fact_id"] for s in record["steps"] for e in s["evidence"]} <= {"eye-1", "eye-2"}
    assert record["steps"][0]["evidence"]
    assert f"2 facts, from {own_kb}" in captured.err and "demo" not in captured.err

    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"id": "a", "question": "What lowers eye pressure?",
                                  "reasoning": "Acetazolamide lowers intraocular pressure.",
                                  "answer": "Acetazolamide"}) + "\n")
    assert main(["batch", "--no-progress", "--input", str(source), "--output", str(out), "--kb", str(own_kb)]) == 0
    (batch_record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert batch_record["provenance"]["kb_id"] == record["provenance"]["kb_id"]
    assert {e["fact_id"] for s in batch_record["steps"] for e in s["evidence"]} <= {"eye-1", "eye-2"}


@pytest.mark.parametrize("command", ["evaluate", "batch", "demo"])
def test_kb_that_cannot_be_used_is_a_usage_error(command, own_kb, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "reasoning": "x"}) + "\n")
    argv = {"evaluate": ["evaluate", *CHAIN], "demo": ["demo"],
            "batch": ["batch", "--input", str(source), "--output", str(tmp_path / "out.jsonl")]}[command]
    for extra, said in ((["--kb", str(tmp_path / "nope")], "does not exist: give a knowledge base directory"),
                        (["--kb", str(own_kb), "--server", "127.0.0.1:1"], "the server at --server uses its own")):
        with pytest.raises(SystemExit) as exited:
            main([*argv, *extra])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"kgverify {command}: error: --kb" in err and said in err, err
        assert "starting the embedded verifier" not in err


def test_no_kb_note_when_the_chain_is_not_judged_against_the_kb(fast_models, tmp_path, capsys):
    context = tmp_path / "context.txt"
    context.write_text("Acetazolamide lowers intraocular pressure.\n")
    assert main(["evaluate", *CHAIN, "--json", "--context-file", str(context)]) == 0
    assert "knowledge base" not in capsys.readouterr().err
    assert main(["evaluate", *CHAIN, "--json", "--metrics", "infogain"]) == 0
    assert "knowledge base" not in capsys.readouterr().err
