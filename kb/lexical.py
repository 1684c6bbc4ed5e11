"""BM25 over the facts (bm25s, English stopwords and Snowball stemming), memory-mappable."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

BM25_DIR = "bm25"
# what bm25s saves for a lucene index and reads back (load refuses a version whose manifest lacks any of them)
BM25_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "params.index.json",
              "vocab.index.json")
DEFAULTS = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "stemmer": "english"}


def _stemmer(params: dict):
    if not params.get("stemmer"):
        return None
    import Stemmer

    # PyStemmer objects are not thread-safe; a fresh one per call is cheap.
    return Stemmer.Stemmer(params["stemmer"]).stemWords


def tokenize(texts: Sequence[str], params: dict) -> list[list[str]]:
    """Lower-cased, stopword-free, stemmed tokens: the same function for facts and queries."""
    import bm25s

    if not texts:
        return []
    return bm25s.tokenize(list(texts), lower=True, stopwords=params.get("stopwords") or None,
                          stemmer=_stemmer(params), return_ids=False, show_progress=False)


def build_bm25(batches: Iterable[list[str]], out_dir: Path, params: dict | None = None) -> dict:
    """Indexes every batch of texts (row order = vector order) into out_dir; returns the parameters used."""
    import bm25s

    params = {**DEFAULTS, **(params or {})}
    vocab: dict[str, int] = {}
    ids: list[list[int]] = []
    for texts in batches:
        for tokens in tokenize(texts, params):
            ids.append([vocab.setdefault(t, len(vocab)) for t in tokens])
    if not vocab:  # bm25s fails on it deep inside ("max() arg is an empty sequence")
        raise ValueError("the facts hold no word BM25 can index (only punctuation, numbers or stopwords); "
                         "build with --no-bm25 for dense retrieval only")
    retriever = bm25s.BM25(k1=params["k1"], b=params["b"], method=params["method"])
    retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    retriever.save(str(out_dir), show_progress=False)
    return {**params, "vocabulary": len(vocab)}


class Bm25Index:
    """Top-k BM25 search over a saved index; scores are BM25 scores (higher is closer)."""

    def __init__(self, directory: Path, params: dict, mmap: bool = False):
        import bm25s

        self.params = params
        tokenize(["probe"], params)  # a stemmer or stopword list this install cannot build fails here, not per search
        self._retriever = bm25s.BM25.load(str(directory), mmap=mmap, load_corpus=False, show_progress=False)
        self._vocab = self._retriever.vocab_dict

    def search(self, queries: Sequence[str], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, scores) per query, best first; only facts sharing a term with the query."""
        out = []
        for tokens in tokenize(queries, self.params):
            ids = [self._vocab[t] for t in tokens if t in self._vocab]
            if not ids or k <= 0:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            scores = np.asarray(self._retriever.get_scores_from_ids(ids), dtype=np.float32)
            top = min(k, int(np.count_nonzero(scores > 0)))
            if top == 0:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.float32)))
                continue
            rows = np.argpartition(-scores, top - 1)[:top]
            rows = rows[np.lexsort((rows, -scores[rows]))]  # best first, ties by row for determinism
            out.append((rows.astype(np.int64), scores[rows]))
        return out
