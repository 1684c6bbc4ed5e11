"""bench/ki_e2e.py reuses a KB at --kb-dir only when it is the one the bench would build (real MiniLM, FAISS)."""

from __future__ import annotations

import gzip
import json

import pytest

from kb.build import build_kb
from kb.chunking import ChunkSpec
from kb.ingest import Document
from kb.knowledge_base import FaissKnowledgeBase
from tests.unit.test_bench_review import _bench, _write_checkcovid


@pytest.fixture()
def bench(tmp_path):
    ki_e2e = _bench("ki_e2e")
    _write_checkcovid(tmp_path)
    path = tmp_path / "kb" / "checkcovid_corpus.jsonl.gz"
    return ki_e2e, path, ki_e2e.read_jsonl_gz(path)


def _texts(kb_dir, embedder):
    kb = FaissKnowledgeBase.load(kb_dir, embedder)
    try:
        return sorted(f.text for f in kb._store.get(list(range(kb.manifest.num_facts))))
    finally:
        kb.close()


def test_the_bench_reuses_its_kb_and_rebuilds_it_for_another_corpus(bench, tmp_path, embedder):
    ki_e2e, path, corpus = bench
    kb_dir = tmp_path / "bench-kb"
    ki_e2e.ensure_kb(kb_dir, path, corpus, embedder)
    built = FaissKnowledgeBase.load(kb_dir, embedder).info.kb_id
    ki_e2e.ensure_kb(kb_dir, path, corpus, embedder)
    assert FaissKnowledgeBase.load(kb_dir, embedder).info.kb_id == built  # the same corpus: reused as it is
    # the corpus file changed (a new release of the shared data): the KB built from the old one was reused
    corpus = corpus + [{"cord_id": "c3", "title": "Ivermectin",
                        "abstract": ["Ivermectin did not lower viral load in a randomized trial."]}]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in corpus))
    ki_e2e.ensure_kb(kb_dir, path, corpus, embedder)
    assert "Ivermectin did not lower viral load in a randomized trial." in _texts(kb_dir, embedder)


def test_a_kb_chunked_otherwise_at_the_default_directory_is_rebuilt(bench, tmp_path, embedder):
    ki_e2e, path, corpus = bench
    kb_dir = tmp_path / "cache" / "checkcovid-kb"
    # an older bench's KB: all of the corpus, packed into chunks of two sentences, without a build record
    build_kb([Document(d["cord_id"], " ".join(d["abstract"]), d["cord_id"]) for d in corpus], kb_dir, embedder,
             chunking=ChunkSpec(max_chars=500), progress=False)
    assert len(_texts(kb_dir, embedder)) == 2
    ki_e2e.ensure_kb(kb_dir, path, corpus, embedder, own_dir=kb_dir)
    assert len(_texts(kb_dir, embedder)) == 3  # one fact per sentence


def test_another_kb_at_kb_dir_is_refused_and_left_alone(bench, tmp_path, embedder):
    ki_e2e, path, corpus = bench
    kb_dir = tmp_path / "my-kb"
    build_kb([Document("x", "Saturn has many moons.")], kb_dir, embedder, progress=False)
    with pytest.raises(SystemExit, match="not the bench's Check-COVID KB.*not built by this bench"):
        ki_e2e.ensure_kb(kb_dir, path, corpus, embedder, own_dir=tmp_path / "cache")
    assert _texts(kb_dir, embedder) == ["Saturn has many moons."]  # neither searched by the bench nor removed
