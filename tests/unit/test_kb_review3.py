"""Knowledge base retrieval edge cases (real MiniLM, FAISS and bm25s)."""

import pytest

from kb.build import build_kb
from kb.chunking import ChunkSpec
from kb.ingest import Document
from kb.knowledge_base import FaissKnowledgeBase, LoadOptions
from server.pipeline.types import RetrievalMode

LONG = " ".join(f"Warfarin dosing note {i}: warfarin doses are adjusted to the INR." for i in range(40))
OTHERS = ["Omeprazole blocks the gastric proton pump.", "Metformin lowers hepatic glucose production.",
          "Zafirlukast blocks leukotriene receptors.", "Furosemide inhibits the Na-K-2Cl cotransporter."]


@pytest.fixture(scope="module")
def long_doc_kb(tmp_path_factory, embedder):
    out = tmp_path_factory.mktemp("kb") / "kb"
    docs = [Document("long", LONG, "https://ex/long", "Warfarin handbook")] + [
        Document(f"d{i}", text, f"https://ex/{i}") for i, text in enumerate(OTHERS)]
    build_kb(docs, out, embedder, chunking=ChunkSpec(max_chars=80), progress=False)
    return out


class CountingIndex:
    def __init__(self, inner):
        self._inner, self.calls = inner, 0

    def search(self, queries, k):
        self.calls += 1
        return self._inner.search(queries, k)


@pytest.mark.parametrize("mode", [RetrievalMode.DENSE, RetrievalMode.HYBRID])
def test_one_document_owning_the_candidate_pool_does_not_cut_the_hits_short(long_doc_kb, embedder, mode):
    # one long document's 40 facts fill the 10 candidates: with one hit per document only 1 of 5 came back,
    # although the KB holds five documents
    kb = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=10))
    assert kb.manifest.num_facts > 40
    kb._index = CountingIndex(kb._index)
    hits = kb.search(["warfarin INR dose", "omeprazole proton pump"], 5, mode)
    assert [len({h.source for h in q}) for q in hits] == [5, 5]
    assert hits[0][0].source == "https://ex/long" and hits[1][0].source == "https://ex/0"
    # two facts per document allowed: 5 hits, at most 2 of the long document
    kb2 = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=10, max_per_document=2))
    sources = [h.source for h in kb2.search(["warfarin INR dose"], 5, mode)[0]]
    assert len(sources) == 5 and sources.count("https://ex/long") == 2


def test_a_query_its_first_pool_satisfies_searches_once(long_doc_kb, embedder):
    kb = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=10))
    kb._index = CountingIndex(kb._index)
    assert len(kb.search(["omeprazole proton pump"], 3, RetrievalMode.HYBRID)[0]) == 3
    assert kb._index.calls == 1


def test_a_kb_with_fewer_documents_than_top_k_answers_what_it_has(long_doc_kb, embedder):
    kb = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=10))
    assert len(kb.search(["warfarin INR dose"], 8, RetrievalMode.DENSE)[0]) == 5  # 5 documents, one hit each
    # BM25 answers only facts sharing a word with the query: none of the others does
    assert [h.source for h in kb.search(["warfarin INR dose"], 5, RetrievalMode.BM25)[0]] == ["https://ex/long"]
    uncapped = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=10, max_per_document=0))
    assert len(uncapped.search(["warfarin"], 500, RetrievalMode.HYBRID)[0]) == kb.manifest.num_facts


class CountingStore:
    def __init__(self, inner):
        self._inner, self.rows = inner, 0

    def get(self, rows):
        self.rows += len(rows)
        return self._inner.get(rows)


def test_hits_read_the_facts_they_need_not_the_whole_candidate_pool(long_doc_kb, embedder):
    # every fused candidate was read from the fact store for the first top_k hits (a widened pool: up to every fact)
    kb = FaissKnowledgeBase.load(long_doc_kb, embedder, LoadOptions(candidates=40, max_per_document=0))
    kb._store = CountingStore(kb._store)
    [hits] = kb.search(["omeprazole proton pump"], 2, RetrievalMode.HYBRID)
    assert len(hits) == 2 and hits[0].source == "https://ex/0"
    assert 0 < kb._store.rows <= 32


@pytest.mark.parametrize("refine", [0, 400])
def test_an_ivfpq_query_whose_probed_lists_are_short_still_gets_k_rows(refine):
    # nprobe lists of a small IVF-PQ index held fewer vectors than asked for: top 100 of 400 gave ~50 rows
    import numpy as np

    from kb.index import VectorIndex, add_vectors, index_params, new_index

    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((400, 32)).astype(np.float16)
    vectors /= np.linalg.norm(vectors.astype(np.float32), axis=1, keepdims=True).astype(np.float16)
    params = index_params("ivfpq", len(vectors), 32, {"nlist": 8, "nprobe": 1, "m": 8, "refine_k": refine})
    assert (params["nlist"], params["nprobe"]) == (8, 1)
    index = new_index("ivfpq", params, 32, vectors)
    add_vectors(index, vectors)
    search = VectorIndex(index, "ivfpq", params, vectors if refine else None)
    scores, rows = search.search(vectors[:5].astype(np.float32), 100)
    assert ((rows >= 0).sum(axis=1) == 100).all()
    assert (rows[:, 0] == np.arange(5)).all() and np.isfinite(scores).all()
    assert (search.search(vectors[:2].astype(np.float32), 1000)[1] >= 0).sum() == 800  # every vector, no more


def _unit_vectors(n, dim, seed=7):
    import numpy as np

    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)


def test_an_hnsw_search_for_more_neighbours_than_ef_search_gets_them():
    # HNSW finds about efSearch neighbours: KGV_KB__HNSW_EF_SEARCH=16 with 100 candidates (200 vectors asked
    # for) or a widened pool gave fewer candidates than asked for
    import numpy as np

    from kb.index import VectorIndex, add_vectors, index_params, new_index

    vectors = _unit_vectors(3000, 32)
    params = index_params("hnsw", len(vectors), 32, {"M": 8, "efConstruction": 40, "efSearch": 16})
    index = new_index("hnsw", params, 32, vectors)
    add_vectors(index, vectors)
    search = VectorIndex(index, "hnsw", params)
    scores, rows = search.search(vectors[:4].astype(np.float32), 200)
    assert ((rows >= 0).sum(axis=1) == 200).all() and (rows[:, 0] == np.arange(4)).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert search.index.hnsw.efSearch == 16  # the configured value stays for ordinary searches
