"""BM25 over facts with bm25s: stemming, stopwords, ranking, empty queries, memory-mapped loading."""

import numpy as np
import pytest

from kb.lexical import Bm25Index, build_bm25, tokenize

TEXTS = [
    "Warfarin therapy is monitored with the INR.",
    "Heparin is monitored with the aPTT.",
    "Monitoring of heparin uses the activated partial thromboplastin time.",
    "Aspirin irreversibly inhibits cyclooxygenase.",
]


@pytest.fixture(scope="module")
def bm25_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bm25") / "bm25"
    params = build_bm25([TEXTS[:2], TEXTS[2:]], out)
    return out, params


def test_tokens_are_lowercased_stemmed_and_free_of_stopwords():
    params = {"stopwords": "en", "stemmer": "english"}
    assert tokenize(["The monitoring of Heparin is MONITORED"], params) == [["monitor", "heparin", "monitor"]]
    assert tokenize([], params) == []


def test_rare_terms_rank_first_and_stems_match(bm25_dir):
    out, params = bm25_dir
    assert params["vocabulary"] > 10 and params["stemmer"] == "english"
    index = Bm25Index(out, params)
    rows, scores = index.search(["INR monitoring"], 4)[0]
    assert rows[0] == 0 and np.all(np.diff(scores) <= 0) and np.all(scores > 0)
    rows, _ = index.search(["monitored heparin"], 4)[0]
    assert set(rows[:2].tolist()) == {1, 2}  # "Monitoring" in row 2 matches "monitored" through the stem


def test_queries_without_known_terms_return_nothing(bm25_dir):
    index = Bm25Index(*bm25_dir)
    for query in ("the of and", "zzzunknownzzz", ""):
        rows, scores = index.search([query], 3)[0]
        assert rows.size == 0 and scores.size == 0
    assert index.search(["heparin"], 0)[0][0].size == 0


def test_memory_mapped_index_scores_identically(bm25_dir):
    out, params = bm25_dir
    a = Bm25Index(out, params).search(["heparin aPTT aspirin"], 4)[0]
    b = Bm25Index(out, params, mmap=True).search(["heparin aPTT aspirin"], 4)[0]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
