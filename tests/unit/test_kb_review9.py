"""Review 9 of `kgverify kb`: bad input fails before anything is embedded (a truncated .gz, a bad row at the end of a
long file, a pipe), `kb search` searches as the server does and prints fact text safely, NaN ids are missing ids,
the embedder's path is recorded absolute, and `kb build` over a KB says which facts it drops."""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import threading

import pytest

import kb.cli as cli
from kb.cli import main
from kb.layout import current_version
from kb.manifest import Manifest


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if a command loads the embedding model (seconds) before it refuses its input."""
    def refuse(*args, **kwargs):
        raise AssertionError("the embedding model was loaded before the input or option was refused")

    monkeypatch.setattr(cli, "_embedder", refuse)


@pytest.fixture
def shared_model(monkeypatch, embedder):
    """The session's embedder instead of a fresh load per command."""
    monkeypatch.setattr(cli, "_embedder", lambda name=None: embedder)
    return embedder


@pytest.fixture(scope="module")
def tiny_kb(tmp_path_factory, embedder):
    from kb.build import build_kb
    from kb.ingest import Document

    out = tmp_path_factory.mktemp("kb") / "kb"
    build_kb([Document("w", "Warfarin is monitored with the INR.")], out, embedder, progress=False)
    return out


def _tiny_rows(n: int) -> str:
    return "".join(json.dumps({"id": f"d{i}", "text": f"Entry {i}: a tiny fact."}) + "\n" for i in range(n))


# 1. a truncated or damaged .gz: one line, status 2, also while the progress bar counts the rows


@pytest.mark.parametrize("command", ["build", "add"])
@pytest.mark.parametrize("damage", ["truncated", "damaged"])
def test_a_truncated_or_damaged_gz_is_one_line_and_status_2_with_the_progress_bar(tmp_path, capsys, no_model,
                                                                                   tiny_kb, command, damage):
    data = gzip.compress(_tiny_rows(3000).encode())
    if damage == "truncated":
        data = data[:8000]
    else:  # the first deflate block's type set to the reserved 3: zlib.error "invalid block type"
        data = data[:10] + bytes([0x07]) + data[11:]
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(bytes(data))
    argv = (["build", "--input", path, "--output", tmp_path / "o"] if command == "build"
            else ["add", tiny_kb, "--input", path])
    code, out, err = _run(capsys, *argv)  # with the progress bar: the rows are counted first
    assert code == 2 and out == ""
    what = "ends early (a truncated .gz?)" if damage == "truncated" else "holds damaged compressed data"
    assert f"kgverify kb: error: {path}: {what}" in err and "Traceback" not in err
    assert current_version(tiny_kb).name == "v000001" and not (tmp_path / "o").exists()


# 2. a bad row anywhere fails before the model is loaded, not after everything before it was embedded


def _csv_late_quote(path):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows([f"d{i}", f"Entry {i}: a tiny fact."] for i in range(2100))
        fh.write('d2100,"an unclosed quote\n')
    return "row from line 2102: not a well-formed CSV row"


BAD_TAILS = {
    "bad.jsonl": ('{broken\n', "bad.jsonl:2101: not valid JSON"),
    "type.jsonl": (json.dumps({"text": 12}) + "\n", "type.jsonl:2101: field 'text' is int, not text"),
    "surrogate.jsonl": ('{"text": "half \\ud800 of a pair"}\n',
                        "surrogate.jsonl:2101: field 'text' holds a lone surrogate"),
}


@pytest.mark.parametrize("name", [*BAD_TAILS, "late.csv"])
@pytest.mark.parametrize("progress", [True, False])
def test_a_bad_row_at_the_end_fails_before_anything_is_embedded(tmp_path, capsys, no_model, name, progress):
    path = tmp_path / name
    if name.endswith(".csv"):
        expected = _csv_late_quote(path)
    else:
        tail, expected = BAD_TAILS[name]
        path.write_text(_tiny_rows(2100) + tail, encoding="utf-8")
    code, out, err = _run(capsys, "build", "--input", path, "--output", tmp_path / "o",
                          *([] if progress else ["--no-progress"]))
    assert code == 2 and out == "" and expected in err, err
    assert "documents:" not in err and not (tmp_path / "o").exists()  # no bar was started, nothing embedded


def test_the_reader_checks_every_row_once_and_keeps_the_counts(tmp_path):
    from kb.ingest import DocumentReader

    path = tmp_path / "docs.jsonl"
    path.write_text(_tiny_rows(3) + json.dumps({"id": "x"}) + "\n\n", encoding="utf-8")
    reader = DocumentReader([path])
    scan = reader.check()
    assert (scan.rows, scan.documents) == (4, 3) and reader.count_rows() == 4
    path.write_text("{broken\n", encoding="utf-8")  # not read again: the counts of the first pass stand
    assert reader.count_rows() == 4
    with pytest.raises(ValueError, match=r"docs.jsonl:1: not valid JSON"):
        DocumentReader([path]).count_rows()


# 3. kb search uses the KGV_KB__* settings, as the server does, and says why it found fewer than k facts


LONG = " ".join(f"Warfarin dosing note {i}: warfarin doses are adjusted to the INR." for i in range(12))


@pytest.fixture(scope="module")
def long_doc_kb(tmp_path_factory, embedder):
    from kb.build import build_kb
    from kb.chunking import ChunkSpec
    from kb.ingest import Document

    out = tmp_path_factory.mktemp("kb") / "kb"
    docs = [Document("long", LONG, "https://ex/long"),
            Document("ctl", "Omeprazole\x1b[2J blocks the \u202egastric\u202c proton pump.\r\n1. not a rank"),
            Document("m", "Metformin lowers hepatic glucose production.")]
    build_kb(docs, out, embedder, chunking=ChunkSpec(max_chars=80), progress=False)
    return out


def test_kb_search_follows_the_servers_kb_settings(long_doc_kb, capsys, shared_model, monkeypatch):
    code, out, err = _run(capsys, "search", long_doc_kb, "warfarin INR dose", "-k", "4", "--json")
    hits = json.loads(out)
    # one fact per document by default: the KB's three documents, and a note saying why not four
    assert code == 0 and len(hits) == 3 and len({h["fact_id"].split("#")[0] for h in hits}) == 3
    assert "kgverify kb: note: 3 of 4 facts: the knowledge base holds 3 documents" in err
    assert "KGV_KB__MAX_PER_DOCUMENT=1" in err
    monkeypatch.setenv("KGV_KB__MAX_PER_DOCUMENT", "0")
    code, out, err = _run(capsys, "search", long_doc_kb, "warfarin INR dose", "-k", "4", "--json")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 4 and all(h["fact_id"].startswith("long#") for h in hits) and err == ""
    monkeypatch.setenv("KGV_KB__TOP_K", "2")  # the default -k, as the server's
    monkeypatch.setenv("KGV_KB__RETRIEVAL_MODE", "bm25")  # and the default mode
    code, out, _ = _run(capsys, "search", long_doc_kb, "warfarin", "--json")
    bm25 = json.loads(out)
    assert code == 0 and len(bm25) == 2
    assert bm25 == json.loads(_run(capsys, "search", long_doc_kb, "warfarin", "-k", "2", "--mode", "bm25", "--json")[1])
    assert bm25 != json.loads(_run(capsys, "search", long_doc_kb, "warfarin", "-k", "2", "--mode", "hybrid",
                                   "--json")[1])


def test_kb_search_passes_the_load_options_the_server_would(long_doc_kb, capsys, shared_model, monkeypatch):
    from kb.knowledge_base import FaissKnowledgeBase, LoadOptions
    from server.config import load_settings

    seen = []
    real = FaissKnowledgeBase.load

    def load(path, embedder, options=None, **kwargs):
        seen.append(options)
        return real(path, embedder, options, **kwargs)

    monkeypatch.setattr(FaissKnowledgeBase, "load", load)
    for name, value in {"BM25_WEIGHT": "0.5", "RRF_K": "10", "CANDIDATES": "7", "HNSW_EF_SEARCH": "99",
                        "VERIFY": "sample", "MMAP": "true"}.items():
        monkeypatch.setenv(f"KGV_KB__{name}", value)
    assert _run(capsys, "search", long_doc_kb, "warfarin", "-k", "1")[0] == 0
    assert seen == [LoadOptions.from_settings(load_settings().kb)]
    assert seen[0].rrf_k == 10 and seen[0].mmap and seen[0].search_params == {"efSearch": 99}


# 6. and 9. plain output: control characters escaped, scores that tell hybrid neighbours apart, a note for no match


def test_kb_search_escapes_control_characters_in_plain_output_only(long_doc_kb, capsys, shared_model):
    code, out, _ = _run(capsys, "search", long_doc_kb, "omeprazole proton pump", "-k", "1", "--mode", "dense")
    assert code == 0 and out.count("\n") == 1  # one fact, one line: \r\n in the fact does not break the list
    assert "\x1b" not in out and "\u202e" not in out and "\r" not in out
    assert "Omeprazole\\x1b[2J blocks the \\u202egastric\\u202c proton pump. 1. not a rank" in out
    raw = json.loads(_run(capsys, "search", long_doc_kb, "omeprazole proton pump", "-k", "1", "--mode", "dense",
                          "--json")[1])
    assert raw[0]["text"] == "Omeprazole\x1b[2J blocks the \u202egastric\u202c proton pump.\r\n1. not a rank"


def test_hybrid_scores_are_shown_with_enough_digits_to_rank(long_doc_kb, capsys, shared_model, monkeypatch):
    monkeypatch.setenv("KGV_KB__MAX_PER_DOCUMENT", "0")
    argv = ("search", long_doc_kb, "warfarin INR dose", "-k", "6", "--mode", "hybrid")
    scores = [h["score"] for h in json.loads(_run(capsys, *argv, "--json")[1])]
    shown = re.findall(r"^ *\d+\. \[([^\]]+)\]", _run(capsys, *argv)[1], re.M)
    assert len(shown) == len(scores) == 6
    assert len(set(shown)) == len(set(scores))  # ties only where the scores tie (3 decimals gave 0.016 six times)
    assert all(math.isclose(float(s), v, rel_tol=1e-3) for s, v in zip(shown, scores))


def test_a_bm25_search_without_a_match_says_so(long_doc_kb, capsys, shared_model):
    code, out, err = _run(capsys, "search", long_doc_kb, "zyxxyq", "--mode", "bm25")
    assert code == 0 and out == ""
    assert "kgverify kb: note: no facts: no fact shares a word with the query" in err


# 5. NaN ids, sources and titles are missing values; whole-number float ids are integers


def test_nan_ids_are_missing_ids_and_float_ids_are_written_as_integers(tmp_path, embedder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kb.build import build_kb
    from kb.chunking import ChunkSpec
    from kb.ingest import read_documents
    from kb.store import FactStore

    texts = ["Warfarin is monitored with the INR. Its dose is adjusted weekly.",
             "Omeprazole blocks the proton pump. It treats reflux.",
             "Metformin lowers glucose. It is taken with meals.",
             "Aspirin inhibits COX. It thins the blood."]
    table = pa.table({"id": pa.array([1.0, float("nan"), 3.0, float("nan")], pa.float64()), "text": texts,
                      "title": pa.array([float("nan"), 2.0, float("nan"), float("nan")], pa.float64())})
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path)
    docs = list(read_documents([path]))
    assert [(d.doc_id, d.named, d.title) for d in docs] == [
        ("1", True, ""), ("docs.parquet:2", False, "2"), ("3", True, ""), ("docs.parquet:4", False, "")]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"id": NaN, "source": NaN, "text": "Warfarin."}\n{"id": 7.0, "text": NaN}\n', encoding="utf-8")
    assert [(d.doc_id, d.named, d.source) for d in read_documents([jsonl])] == [("docs.jsonl:1", False, "")]

    out = tmp_path / "kb"
    build_kb(read_documents([path]), out, embedder, chunking=ChunkSpec(max_chars=40, context_chars=200),
             progress=False)
    store = FactStore(current_version(out) / "facts.sqlite")
    facts = [f for f in store.get(list(range(store.count()))) if f is not None]
    store.close()
    assert {f.fact_id for f in facts} == {"1#0", "1#1", "docs.parquet:2#0", "docs.parquet:2#1", "3#0", "3#1",
                                          "docs.parquet:4#0", "docs.parquet:4#1"}
    assert len({f.doc for f in facts}) == 4  # the two NaN-id rows are two sources, each with its own context


# 4. the embedder's path is recorded absolute


def test_a_relative_embedder_path_is_recorded_absolute(tmp_path, capsys, monkeypatch):
    from kb.embedder import resolve_model_dir

    bundled = resolve_model_dir("all-MiniLM-L6-v2")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mymodel").symlink_to(bundled, target_is_directory=True)
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"text": "Warfarin is monitored with the INR."}) + "\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "models")
    assert resolve_model_dir("mymodel") == tmp_path / "models" / "mymodel"  # absolute, the link kept
    assert resolve_model_dir("../models/./mymodel") == tmp_path / "models" / "mymodel"
    code, _, err = _run(capsys, "build", "--input", docs, "--output", tmp_path / "kb", "--embedder", "mymodel",
                        "--no-progress")
    assert code == 0, err
    assert Manifest.load(current_version(tmp_path / "kb")).embedder == str(tmp_path / "models" / "mymodel")
    monkeypatch.chdir(tmp_path)  # elsewhere: the KB can still be searched and extended with its recorded model
    code, out, err = _run(capsys, "search", tmp_path / "kb", "INR", "-k", "1", "--json")
    assert code == 0 and json.loads(out)[0]["text"] == "Warfarin is monitored with the INR.", err


# 7. kb build over a KB says how many of the previous version's facts it drops


def test_kb_build_over_a_kb_warns_of_the_facts_it_drops(tmp_path, capsys, shared_model):
    docs, more, out = tmp_path / "docs.jsonl", tmp_path / "more.jsonl", tmp_path / "kb"
    docs.write_text(_tiny_rows(3), encoding="utf-8")
    more.write_text(json.dumps({"id": "x", "text": "Warfarin is monitored with the INR."}) + "\n", encoding="utf-8")
    assert _run(capsys, "build", "--input", docs, "--output", out, "--no-progress")[0] == 0
    code, _, err = _run(capsys, "build", "--input", docs, "--output", out, "--no-progress")
    assert code == 0 and "warning" not in err  # the same inputs: nothing dropped
    assert _run(capsys, "add", out, "--input", more, "--no-progress")[0] == 0
    code, stdout, err = _run(capsys, "build", "--input", docs, "--output", out, "--no-progress")
    assert code == 0 and json.loads(stdout)["facts"] == 3
    assert ("kgverify kb: warning: 1 of the previous version's 4 facts are not in this build: kb build replaces the "
            "knowledge base's content with its inputs (kb add adds to it)") in err
    assert Manifest.load(current_version(out)).build["previous_facts_not_kept"] == 1


# 8. pipes and other special files


def test_a_pipe_is_refused_as_not_a_regular_file_before_the_model_loads(tmp_path, capsys, no_model):
    fifo = tmp_path / "docs.jsonl"
    os.mkfifo(fifo)
    code, _, err = _run(capsys, "build", "--input", fifo, "--output", tmp_path / "o")
    assert code == 2 and f"input {fifo} is not a regular file or directory (a pipe)" in err
    assert "pipes and process substitution are not supported" in err and "does not exist" not in err
    read, write = os.pipe()  # what `--input <(cat docs.jsonl)` passes: /dev/fd/N
    try:
        code, _, err = _run(capsys, "build", "--input", f"/dev/fd/{read}", "--output", tmp_path / "o")
    finally:
        os.close(read)
        os.close(write)
    assert code == 2 and "is not a regular file or directory (a pipe)" in err


def test_a_pipe_inside_a_directory_input_is_not_read(tmp_path):
    from kb.ingest import DocumentReader

    (tmp_path / "a.jsonl").write_text(_tiny_rows(2), encoding="utf-8")
    fifo = tmp_path / "b.jsonl"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(rows=DocumentReader([tmp_path]).count_rows()), daemon=True)
    worker.start()
    worker.join(20)
    blocked = worker.is_alive()
    if blocked:  # waiting in open() for a writer: let it go (a writer that closes at once gives it EOF)
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert not blocked and result == {"rows": 2}


# 9. options and inputs refused before the model loads, named by their option


@pytest.mark.parametrize("extra, expected", [
    (["--keep-versions", "0"], "--keep-versions must be at least 1, got 0"),
    (["--index", "hnsw", "--index-param", "nprobe=4"], "index parameter 'nprobe' does not apply to a hnsw index"),
    (["--chunk-chars", "0"], "--chunk-chars must be at least 1, got 0"),
    (["--chunk-overlap", "-1"], "--chunk-overlap must be at least 0, got -1"),
    (["--context-chars", "-5"], "--context-chars must be at least 0, got -5"),
])
def test_bad_build_options_are_refused_before_the_model_loads(tmp_path, capsys, no_model, extra, expected):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(_tiny_rows(1), encoding="utf-8")
    code, out, err = _run(capsys, "build", "--input", docs, "--output", tmp_path / "o", *extra)
    assert code == 2 and out == "" and f"kgverify kb: error: {expected}" in err, err
    assert "max_chars" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["build", "add"])
def test_unusable_inputs_are_refused_before_the_model_loads(tmp_path, capsys, no_model, tiny_kb, command):
    def run(path, *extra):
        argv = (["build", "--input", path, "--output", tmp_path / "o"] if command == "build"
                else ["add", tiny_kb, "--input", path])
        return _run(capsys, *argv, *extra)

    odd = tmp_path / "doc.xyz"
    odd.write_text("x", encoding="utf-8")
    code, _, err = run(odd)
    assert code == 2 and f"unsupported input format: {odd}" in err
    notext = tmp_path / "notext.jsonl"
    notext.write_text(json.dumps({"id": "1", "body": "Warfarin."}) + "\n", encoding="utf-8")
    code, _, err = run(notext)
    assert code == 2 and "the inputs hold no document text (check --text-field" in err and "body" in err
    code, _, err = run(notext, "--keep-versions", "0")
    assert code == 2 and "--keep-versions must be at least 1" in err
    assert current_version(tiny_kb).name == "v000001"
