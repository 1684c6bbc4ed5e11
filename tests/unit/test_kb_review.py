"""Knowledge base edge cases: ingestion ids and source context, chunking, retrieval (real MiniLM, FAISS, bm25s)."""

import json
import sqlite3
import unicodedata

import pytest

from kb.build import add_documents, build_kb
from kb.chunking import ChunkSpec, chunk_spans
from kb.ingest import Document, DocumentReader
from kb.store import Fact, NewFact, StoreWriter
from tests.unit.test_kb_build import RecordingEmbedder  # the real embedder, recording every text it encodes


def _jsonl(path, *texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def test_rows_without_an_id_never_take_another_files_context(tmp_path, embedder):
    # rows without an id are named <file>:<line>: files of the same name (shards in two directories, the next
    # batch of docs.jsonl given to kb add) give unrelated rows the same name, and no source tells them apart
    spec = ChunkSpec(max_chars=40, context_chars=200)
    recorder = RecordingEmbedder(embedder)
    _jsonl(tmp_path / "en" / "docs.jsonl", "Warfarin is an anticoagulant. It is monitored with the INR.")
    _jsonl(tmp_path / "fr" / "docs.jsonl", "Saturn has many moons. The largest is Titan.")
    build_kb(DocumentReader([tmp_path / "en", tmp_path / "fr"]), tmp_path / "kb", recorder, chunking=spec,
             progress=False)
    _jsonl(tmp_path / "next" / "docs.jsonl", "Mars is red. Its soil holds much iron oxide.")
    add_documents(tmp_path / "kb", DocumentReader([tmp_path / "next"]), recorder, progress=False)
    assert "Saturn has many moons.\nThe largest is Titan." in recorder.encoded
    assert "Mars is red.\nIts soil holds much iron oxide." in recorder.encoded
    in_warfarin_context = [text for text in recorder.encoded if text.startswith("Warfarin is an anticoagulant.\n")]
    assert in_warfarin_context == ["Warfarin is an anticoagulant.\nIt is monitored with the INR."]


def _lookup_steps(store, doc_id: str, source: str) -> int:
    """SQLite virtual-machine steps one source-context lookup takes (deterministic, unlike its time)."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    store._con.set_progress_handler(count, 1)
    try:
        store.source_context(doc_id, source)
    finally:
        store._con.set_progress_handler(None, 1)
    return steps[0]


def test_looking_up_a_source_context_does_not_read_every_document_sharing_the_id(tmp_path):
    # a corpus whose rows share an id across many sources (a coarse --id-field, URLs as sources): every lookup read
    # all earlier documents of the id, so building n of them took time quadratic in n (40,000: minutes)
    store = StoreWriter(tmp_path / "facts.sqlite", create=True)
    steps = {}
    for n in range(1, 4001):
        store.add_document("shared", f"context {n}", f"https://site/{n}")
        if n in (100, 4000):
            steps[n] = _lookup_steps(store, "shared", "https://site/new")
    assert steps[4000] < 2 * steps[100], steps
    assert store.source_context("shared", "https://site/7") == "context 7"
    assert store.source_context("shared", "https://elsewhere") is None
    store.add_document("shared", "the first without a source", None)  # a store written before sources were kept
    assert store.source_context("shared", "https://elsewhere") == "the first without a source"
    assert store.source_context("shared", "https://site/7") == "context 7"  # the earlier of the two
    store.close()


def test_long_units_are_cut_at_any_whitespace_and_never_inside_a_letter():
    cells = "Warfarin\t5mg\toral\tdaily\tINR\t2-3"  # a table row: tab-separated, no space
    assert [cells[s:e] for s, e in chunk_spans(cells, ChunkSpec(max_chars=14))] == [
        "Warfarin\t5mg", "oral\tdaily\tINR", "2-3"]
    accented = "e\u0301" * 6  # é written as e + a combining acute accent
    pieces = [accented[s:e] for s, e in chunk_spans(accented, ChunkSpec(max_chars=5))]
    assert "".join(pieces) == accented and all(p.startswith("e") and p.endswith("\u0301") for p in pieces), pieces
    thai = "ภาษาไทยเป็นภาษาที่ไม่มีการเว้นวรรคระหว่างคำ"  # no spaces between words, vowel signs above letters
    pieces = [thai[s:e] for s, e in chunk_spans(thai, ChunkSpec(max_chars=10))]
    assert "".join(pieces) == thai and all(len(p) <= 10 for p in pieces)
    assert not any(unicodedata.category(p[0]).startswith("M") for p in pieces), pieces


def test_a_fact_the_store_refuses_for_another_reason_than_its_id_is_an_error_not_a_million_retries(tmp_path):
    # an id clash is retried as "id~1", "id~2"...; any other refusal was retried the same way a million times, then
    # the fact was left out while its vectors were kept
    store = StoreWriter(tmp_path / "facts.sqlite", create=True)
    store.add_facts([NewFact(Fact("a", "a", "Warfarin.", "s", "", 0, 0, 9), 1, ((b"k1", "Warfarin."),))])
    assert store.add_facts([NewFact(Fact("a", "a", "Heparin.", "s", "", 0, 0, 8), 2, ((b"k2", "Heparin."),))]) == [1]
    with pytest.raises(sqlite3.IntegrityError, match="facts.source"):
        store.add_facts([NewFact(Fact("b", "b", "Metformin.", None, "", 0, 0, 10), 3, ((b"k3", "Metformin."),))])
    assert [row for (row,) in store._con.execute("SELECT fact_id FROM facts ORDER BY row")] == ["a", "a~1"]
    store.close()


@pytest.mark.parametrize("content, convert", [
    ('[\n  {"id": "a", "text": "Warfarin is monitored with the INR."}\n]\n', "jq -c '.[]' docs.json > docs.jsonl"),
    ('[{"id": "a", "text": "Warfarin is monitored with the INR."}]\n', "jq -c '.[]' docs.json > docs.jsonl"),
    ('{\n  "id": "a",\n  "text": "Warfarin is monitored with the INR."\n}\n', "jq -c . docs.json > docs.jsonl"),
])
def test_a_json_input_holding_one_json_document_says_inputs_are_json_lines(tmp_path, content, convert):
    # a .json file as most tools write it (an array, an indented object) was "not valid JSON (Expecting value)"
    path = tmp_path / "docs.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        list(DocumentReader([path]))
    assert str(err.value).startswith(f"{path}:1: ") and "JSON lines (one object per line)" in str(err.value)
    assert str(err.value).endswith(convert)


def _model_copy(directory, downloaded_at: float):
    """The bundled MiniLM as `hf download --local-dir` leaves a model: its files, plus download metadata under
    .cache/huggingface (commit, etag and the time of the download)."""
    from kb.embedder import resolve_model_dir

    source = resolve_model_dir("all-MiniLM-L6-v2")
    for path in source.rglob("*"):
        if path.is_file():
            (directory / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (directory / path.relative_to(source)).symlink_to(path)
    metadata = directory / ".cache" / "huggingface" / "download" / "model.safetensors.metadata"
    metadata.parent.mkdir(parents=True)
    metadata.write_text(f"c9745ed1d9f207416be6d2e6f8de32d1f16199bf\n\"53aa51172d\"\n{downloaded_at}\n")
    return directory


def test_the_same_model_downloaded_twice_serves_the_kbs_it_built(tmp_path, embedder):
    # a model directory downloaded on the build machine and again on the server differs only in the download times
    # its .cache/huggingface metadata records: those made its weights hash differ, and every KB was refused as
    # "built with another embedder"
    from kb.embedder import SentenceTransformerEmbedder
    from kb.knowledge_base import FaissKnowledgeBase
    from server.pipeline.types import RetrievalMode

    builder = SentenceTransformerEmbedder(str(_model_copy(tmp_path / "build-machine", 1764300000.5)))
    server = SentenceTransformerEmbedder(str(_model_copy(tmp_path / "server", 1764390000.25)))
    assert builder.weights_hash == server.weights_hash == embedder.weights_hash
    build_kb([Document("w", "Warfarin is monitored with the INR.")], tmp_path / "kb", builder, progress=False)
    kb = FaissKnowledgeBase.load(tmp_path / "kb", server)
    assert kb.search(["warfarin monitoring"], 1, RetrievalMode.DENSE)[0][0].fact_id == "w"


def test_a_linked_directory_inside_a_directory_input_is_read_once(tmp_path):
    # linked directories were skipped without a word (their documents silently left out of the KB)
    _jsonl(tmp_path / "corpus" / "a.jsonl", "Warfarin is monitored with the INR.")
    _jsonl(tmp_path / "elsewhere" / "b.jsonl", "Heparin is monitored with the aPTT.")
    (tmp_path / "corpus" / "linked").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "corpus" / "again").symlink_to(tmp_path / "elsewhere")  # the same directory twice: read once
    (tmp_path / "corpus" / "loop").symlink_to(tmp_path / "corpus")  # a link back up: no endless walk
    texts = [doc.text for doc in DocumentReader([tmp_path / "corpus"])]
    assert sorted(texts) == ["Heparin is monitored with the aPTT.", "Warfarin is monitored with the INR."]
