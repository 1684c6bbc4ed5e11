"""`kgverify kb build|add|search|info|verify` end to end (in-process, real models and indexes)."""

import csv
import json

import pytest

from kb.cli import main
from kb.layout import current_version

ROWS = [
    {"answer": "Warfarin is a vitamin K antagonist.  Its effect is monitored with the INR.", "qid": "q1",
     "url": "https://ex/warfarin", "focus": "Warfarin"},
    {"answer": "Zafirlukast blocks leukotriene receptors and prevents asthma attacks.", "qid": "q1",
     "url": "https://ex/zafirlukast", "focus": "Zafirlukast"},
]
FIELDS = ["--text-field", "answer", "--id-field", "qid", "--source-field", "url", "--title-field", "focus"]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def csv_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "docs.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ROWS[0]))
        writer.writeheader()
        writer.writerows(ROWS)
    return path


def test_build_search_add_info_and_verify(tmp_path, capsys, csv_input):
    out = tmp_path / "kb"
    code, stdout, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS,
                                "--chunk-chars", "70", "--index", "flat", "--no-progress")
    assert code == 0 and "published v000001" in stderr
    summary = json.loads(stdout)
    # q1#1 ("Its effect...") gets a second vector in its source's context; the zafirlukast row shares the id
    # q1 but not the source, so it is its own context (one vector)
    assert summary["facts"] == 3 and summary["documents"] == 2 and summary["embedded"] == 4

    code, stdout, _ = _run(capsys, "search", str(out), "how is warfarin monitored", "-k", "2", "--json")
    hits = json.loads(stdout)
    assert code == 0 and len(hits) == 2
    assert set(hits[0]) == {"fact_id", "text", "source", "title", "score"}
    assert hits[0]["fact_id"] in ("q1#0", "q1#1") and hits[0]["source"] == "https://ex/warfarin"
    assert hits[0]["text"] in ROWS[0]["answer"] and hits[0]["title"] == "Warfarin"

    dense = json.loads(_run(capsys, "search", str(out), "breathing trouble", "-k", "1", "--mode", "dense",
                            "--json")[1])
    lexical = json.loads(_run(capsys, "search", str(out), "breathing trouble", "-k", "1", "--mode", "bm25",
                              "--json")[1])
    assert dense[0]["fact_id"] == "q1#2" and lexical == []

    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"answer": "Furosemide is a loop diuretic.", "qid": "q3", "url": "u"}) + "\n")
    code, stdout, _ = _run(capsys, "add", str(out), "--input", str(more), *FIELDS, "--no-progress")
    assert code == 0 and json.loads(stdout)["embedded"] == 1 and json.loads(stdout)["facts"] == 4
    code, stdout, stderr = _run(capsys, "add", str(out), "--input", str(more), *FIELDS, "--no-progress")
    again = json.loads(stdout)  # the same facts again: this add's counts, not the previous add's
    assert code == 0 and "unchanged" in stderr and again["unchanged"] is True and again["version"] == "v000002"
    assert again["facts_added"] == 0 and again["embedded"] == 0 and again["duplicates_dropped"] == 1
    # every per-run number is this run's: nothing reused or embedded, so no rate (not the previous add's)
    assert again["reused"] == 0 and again["embeddings_per_s"] is None and again["seconds"] < 60
    assert (again["facts"], again["documents"]) == (4, 3)  # the KB's totals, as after any add

    info = json.loads(_run(capsys, "info", str(out))[1])
    assert info["version"] == "v000002" and info["num_facts"] == 4 and info["chunking"]["max_chars"] == 70
    assert info["index"]["family"] == "flat" and info["embedder"] == "all-MiniLM-L6-v2" and info["bytes"] > 0

    assert _run(capsys, "verify", str(out))[0] == 0
    store = current_version(out) / "facts.sqlite"
    store.write_bytes(store.read_bytes()[:-1] + b"\x01")
    code, _, stderr = _run(capsys, "verify", str(out))
    assert code == 1 and "facts.sqlite fails its checksum" in stderr


def test_clear_errors_for_bad_invocations(tmp_path, capsys, csv_input):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(tmp_path / "taken"))
    assert code == 2 and "holds no knowledge base" in stderr
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(tmp_path / "kb"))
    assert code == 2 and "no column 'text'" in stderr and not (tmp_path / "kb" / "CURRENT").exists()
    assert not (tmp_path / "kb").exists()  # a failed first build leaves no directory that looks like a damaged KB
    code, _, stderr = _run(capsys, "search", str(tmp_path / "kb"), "query")
    assert code == 1 and "does not exist" in stderr
    code, _, stderr = _run(capsys, "search", str(tmp_path / "nothing"), "query")
    assert code == 1 and "not a knowledge base" in stderr
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(tmp_path / "kb"),
                           "--index-param", "nlist=lots", *FIELDS)
    assert code == 2 and "NAME=INTEGER" in stderr


def test_add_refuses_inputs_without_document_text_as_build_does(tmp_path, capsys, csv_input):
    out = tmp_path / "kb"
    assert _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS, "--no-progress")[0] == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"qid": "q9", "body": "Furosemide is a loop diuretic."}) + "\n")
    for command in (["build", "--input", str(rows), "--output", str(tmp_path / "other")],
                    ["add", str(out), "--input", str(rows)]):
        code, stdout, stderr = _run(capsys, *command, "--text-field", "answer", "--no-progress")
        assert code == 2 and stdout == "", stderr
        assert "the inputs hold no document text (check --text-field" in stderr
    assert current_version(out).name == "v000001" and "unchanged" not in stderr
    rows.write_text(json.dumps({"qid": "q9", "answer": 12}) + "\n")
    code, _, stderr = _run(capsys, "add", str(out), "--input", str(rows), "--text-field", "answer", "--no-progress")
    assert code == 2 and f"{rows}:1: field 'answer' is int, not text" in stderr
    assert current_version(out).name == "v000001"


def test_a_list_of_strings_in_the_text_field_builds_and_adds_as_one_document(tmp_path, capsys):
    source = tmp_path / "pubmedqa.jsonl"
    source.write_text(json.dumps({"pmid": "1", "CONTEXTS": ["Programmed cell death shapes lace plant leaves.",
                                                            "Mitochondria were stained with MitoTracker."]}) + "\n")
    fields = ["--text-field", "CONTEXTS", "--id-field", "pmid", "--no-progress"]
    code, stdout, _ = _run(capsys, "build", "--input", str(source), "--output", str(tmp_path / "kb"), *fields,
                           "--chunk-chars", "60")
    assert code == 0 and json.loads(stdout)["facts"] == 2 and json.loads(stdout)["documents"] == 1
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"pmid": "2", "CONTEXTS": ["Warfarin is monitored with the INR."]}) + "\n")
    code, stdout, _ = _run(capsys, "add", str(tmp_path / "kb"), "--input", str(more), *fields)
    assert code == 0 and json.loads(stdout)["facts_added"] == 1
    hits = json.loads(_run(capsys, "search", str(tmp_path / "kb"), "MitoTracker staining", "-k", "1", "--json")[1])
    assert hits[0]["fact_id"] == "1#1" and hits[0]["text"] == "Mitochondria were stained with MitoTracker."


def test_the_build_progress_bar_counts_documents_against_their_total(tmp_path, capsys, csv_input):
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(tmp_path / "kb"), *FIELDS,
                           "--chunk-chars", "70")
    last = stderr.replace("\r", "\n").split("documents:")[-1].splitlines()[0]
    assert code == 0 and "100%" in last and " 2/2 " in last, stderr  # a total (and so an ETA), in documents
    assert "facts=3" in last and "embedded=4" in last, stderr  # the counts after the last batch, not before


def test_kgverify_kb_exits_and_words_its_errors_exactly_as_python_m_kb(tmp_path, capsys, csv_input):
    from client.cli import main as kgverify

    out = tmp_path / "kb"
    assert _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS, "--index", "flat",
                "--no-progress")[0] == 0
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"answer": "Furosemide is a loop diuretic.", "qid": "q3", "url": "u"}) + "\n")
    store = current_version(out) / "facts.sqlite"
    store.write_bytes(store.read_bytes()[:-1] + b"\x01")  # a damaged KB: 1 (docs/knowledge_base.md)
    for command in (["verify", str(out)], ["search", str(out), "warfarin"],
                    ["add", str(out), "--input", str(more), *FIELDS, "--no-progress"],
                    ["search", str(tmp_path / "nothing"), "warfarin"],  # not a KB: 1
                    ["build", "--input", str(tmp_path / "absent.jsonl"), "--output", str(tmp_path / "o"),
                     "--no-progress"]):  # 2
        alone = _run(capsys, *command)
        code = kgverify(["kb", *command])
        stdout, stderr = capsys.readouterr()
        assert (code, stdout, stderr) == alone, command
        last = stderr.strip().splitlines()[-1]  # (after add's stage line)
        assert last.startswith("kgverify kb: error: ") and code == (2 if command[0] == "build" else 1), stderr


def test_an_unsupported_input_suffix_is_refused_with_exactly_the_accepted_suffixes(tmp_path, capsys):
    from pathlib import Path

    from kb.ingest import _format

    documented = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".txt", ".md", ".text"}
    assert all(_format(Path(f"docs{suffix}")) and _format(Path(f"docs{suffix}.gz")) for suffix in documented)
    source = tmp_path / "docs.xml"
    source.write_text("<doc>Warfarin is monitored with the INR.</doc>")
    code, _, stderr = _run(capsys, "build", "--input", str(source), "--output", str(tmp_path / "kb"), "--no-progress")
    assert code == 2 and f"unsupported input format: {source}" in stderr, stderr
    listed = stderr.split("(use ", 1)[1].split(", optionally .gz)")[0]
    assert set(listed.replace(" or ", ", ").split(", ")) == documented, listed


def test_search_refuses_an_empty_query_and_a_negative_k_as_bad_options(tmp_path, capsys, csv_input):
    out = tmp_path / "kb"
    assert _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS, "--no-progress")[0] == 0
    code, stdout, stderr = _run(capsys, "search", str(out), "\u200b ")  # answered 5 arbitrary facts, status 0
    assert code == 2 and "query is empty" in stderr and not stdout
    code, _, stderr = _run(capsys, "search", str(out), "warfarin", "-k", "-3")  # was status 1
    assert code == 2 and "-k must not be negative" in stderr


def test_an_os_error_while_writing_is_one_line_and_an_interrupt_after_the_switch_says_what_was_published(
        tmp_path, capsys, csv_input, monkeypatch):
    import kb.build

    out = tmp_path / "kb"
    assert _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS, "--no-progress")[0] == 0

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(out / "versions" / ".tmp-1" / "index.faiss"))

    monkeypatch.setattr(kb.build, "build_kb", disk_full)
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS)
    stage, _, stderr = stderr.partition("\n")  # the inputs were read and checked first (a stage line)
    assert stage == "kgverify kb: reading and checking the inputs"
    assert code == 1 and stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "No space left on device" in stderr and "is as it was (nothing was published)" in stderr

    def published_then_interrupted(*args, **kwargs):
        (out / "CURRENT").write_text("v000002\n")  # the switch happened; pruning was interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(kb.build, "build_kb", published_then_interrupted)
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS)
    assert code == 130 and "v000002 was published" in stderr and "nothing was published" not in stderr


def test_failed_writes_leave_directories_as_they_were_and_a_publish_killed_midway_does_not_block_builds(
        tmp_path, capsys, csv_input):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o2770)  # made by the user (permissions, a mount point): a failed first build deleted it
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(mine))  # no 'text' column
    assert code == 2 and mine.is_dir() and list(mine.iterdir()) == []
    code, _, stderr = _run(capsys, "add", str(tmp_path / "missing"), "--input", str(csv_input), *FIELDS)
    assert code == 1 and "does not exist" in stderr and not (tmp_path / "missing").exists()  # no .lock made there
    # a first build killed while replacing CURRENT: a version, CURRENT's temporary file, no CURRENT
    killed = tmp_path / "killed"
    code, stdout, _ = _run(capsys, "build", "--input", str(csv_input), "--output", str(killed), *FIELDS, "--no-progress")
    assert code == 0
    facts = json.loads(stdout)["facts"]
    (killed / "CURRENT").rename(killed / "CURRENT.tmp-1a2b3c4d")
    code, stdout, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(killed), *FIELDS,
                                "--no-progress")
    assert code == 0, stderr  # was refused: "not empty and holds no knowledge base (CURRENT.tmp-1a2b3c4d)"
    assert not list(killed.glob("CURRENT.tmp-*")) and json.loads(stdout)["facts"] == facts


def test_keep_versions_below_one_is_a_bad_option(tmp_path, capsys, csv_input):
    code, _, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(tmp_path / "kb"), *FIELDS,
                           "--keep-versions", "0")
    assert code == 2 and "--keep-versions must be at least 1" in stderr and not (tmp_path / "kb").exists()


def test_a_full_disk_seen_by_faiss_or_sqlite_is_one_line_saying_nothing_was_published(
        tmp_path, capsys, csv_input, monkeypatch):
    """On a full file system faiss raised RuntimeError ("'ret == (size * 4)' failed: write error in …") and SQLite
    OperationalError ("database or disk is full"): tracebacks with status 1, saying nothing of the KB."""
    import sqlite3

    import faiss

    import kb.store

    out = tmp_path / "kb"
    assert _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS, "--no-progress")[0] == 0
    published = (out / "CURRENT").read_text()

    def faiss_disk_full(index, path):
        raise RuntimeError("Error in void faiss::write_index(const Index*, IOWriter*, int) at index_write.cpp:499: "
                           f"Error: 'ret == (size * 4)' failed: write error in {path}: 180179 != 915456 "
                           "(No space left on device)")

    def sqlite_disk_full(self, facts):
        raise sqlite3.OperationalError("database or disk is full")

    for owner, name, broken, message in ((faiss, "write_index", faiss_disk_full, "No space left on device: "),
                                         (kb.store.StoreWriter, "add_facts", sqlite_disk_full,
                                          "database or disk is full (fact store)")):
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, broken)
            code, stdout, stderr = _run(capsys, "build", "--input", str(csv_input), "--output", str(out), *FIELDS,
                                        "--no-progress", "--context-chars", "0")
        assert code == 1 and not stdout and "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert message in last and last.endswith(f"{out} is as it was (nothing was published)"), stderr
        assert (out / "CURRENT").read_text() == published and [p.name for p in (out / "versions").iterdir()] == [
            published.strip()]
