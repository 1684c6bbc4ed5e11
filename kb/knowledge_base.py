"""A loaded knowledge base: FAISS index, BM25 and fact store of one version, verified against its manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from server.pipeline.errors import FailedPreconditionError, InvalidArgumentError
from server.pipeline.types import KbHit, KbInfo, RetrievalMode

from .errors import KnowledgeBaseCorruptError, KnowledgeBaseMismatchError, KnowledgeBaseNotFoundError
from .index import INDEX_NAME, PARAM_MINIMUMS, SEARCH_PARAMS, VectorIndex, check_params, load_index
from .layout import current_name, current_version
from .lexical import BM25_DIR, BM25_FILES, Bm25Index
from .manifest import Manifest
from .store import STORE_NAME, Fact, FactStore
from .vectors import VECTOR_FACTS_NAME, VECTORS_NAME, open_vector_facts, open_vectors


LOAD_ATTEMPTS = 3  # reads of CURRENT when a writer prunes the version being loaded


def required_files(manifest: Manifest) -> list[str]:
    """The files a version must hold (and its manifest must list, with their checksums): every file load reads."""
    names = [INDEX_NAME, STORE_NAME, VECTORS_NAME, VECTOR_FACTS_NAME]
    return names + ([f"{BM25_DIR}/{name}" for name in BM25_FILES] if manifest.bm25 else [])


def _check_file_set(path: Path, version: Path, manifest: Manifest) -> None:
    """KnowledgeBaseCorruptError unless the manifest lists every file load reads and each is there: a file the
    manifest does not list would be read without any checksum."""
    required = required_files(manifest)
    unlisted = [name for name in required if name not in manifest.files]
    missing = [name for name in required if not (version / name).is_file()]
    if unlisted or missing:
        what = (f"its manifest does not list {', '.join(unlisted)}" if unlisted else
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        raise KnowledgeBaseCorruptError(f"knowledge base {path} ({version.name}) is incomplete: {what}; rebuild it")


@dataclass(frozen=True)
class LoadOptions:
    """How a KB is loaded and searched (server settings KGV_KB__*)."""

    verify: str = "auto"
    """Checksum verification at load: full, sample (sizes + sampled blocks) or auto (full up to 2 GiB)."""
    mmap: bool = False
    """Memory-map the FAISS index and BM25 arrays instead of reading them into RAM."""
    search_params: dict = field(default_factory=dict)
    """Overrides of the manifest's search parameters (efSearch, nprobe, refine_k)."""
    rrf_k: int = 60
    """Reciprocal rank fusion constant: a fact scores sum(weight / (rrf_k + rank)) over the fused lists."""
    bm25_weight: float = 0.35
    """Weight of the BM25 list in the fusion (dense has 1): BM25 alone retrieves less than dense here."""
    candidates: int = 100
    """Facts taken from each retriever before fusion and per-document limits."""
    max_per_document: int = 1
    """Most facts returned from one document (0 = no limit): five facts from five documents retrieved
    the answer's document most often on MedQuAD."""

    @classmethod
    def from_settings(cls, kb) -> "LoadOptions":
        """From server.config.KbSettings (fields it lacks keep their defaults)."""
        known = {name: getattr(kb, name) for name in ("verify", "mmap", "rrf_k", "bm25_weight", "candidates",
                                                       "max_per_document") if getattr(kb, name, None) is not None}
        params = {"efSearch": getattr(kb, "hnsw_ef_search", None), "nprobe": getattr(kb, "ivf_nprobe", None),
                  "refine_k": getattr(kb, "refine_k", None)}
        return cls(search_params={k: v for k, v in params.items() if v is not None}, **known)


def _rrf(lists: Sequence[np.ndarray], weights: Sequence[float], rrf_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and fused scores, best first (ties broken by row so results are deterministic)."""
    fused: dict[int, float] = {}
    for rows, weight in zip(lists, weights):
        for rank, row in enumerate(rows.tolist(), 1):
            if row >= 0:
                fused[row] = fused.get(row, 0.0) + weight / (rrf_k + rank)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return np.array([r for r, _ in ordered], np.int64), np.array([s for _, s in ordered], np.float64)


class FaissKnowledgeBase:
    """Dense, BM25 and hybrid retrieval over a KB directory built by `kgverify kb build`."""

    def __init__(self, path: Path, version: Path, manifest: Manifest, index: VectorIndex, vector_facts: np.ndarray,
                 store: FactStore, bm25: Bm25Index | None, embedder, options: LoadOptions):
        self.path = Path(path)
        self.version = version
        self.manifest = manifest
        self._index = index
        self._vector_facts = vector_facts
        self._store = store
        self._bm25 = bm25
        self._embedder = embedder
        self.options = options
        modes = (RetrievalMode.DENSE,) + ((RetrievalMode.BM25, RetrievalMode.HYBRID) if bm25 is not None else ())
        self.info = KbInfo(
            kb_id=manifest.kb_id, path=str(self.path), created_at=manifest.created_at, embedder=manifest.embedder,
            embedder_hash=manifest.embedder_hash, dim=manifest.dim, index_family=manifest.index["family"],
            metric=manifest.index.get("metric", "inner_product"),
            index_params={k: str(v) for k, v in index.params.items()}, num_facts=manifest.num_facts,
            num_documents=manifest.num_documents, checksum=manifest.checksum(),
            file_checksums=manifest.file_checksums(), modes=modes)

    @classmethod
    def load(cls, path: Path, embedder, options: LoadOptions | None = None,
             verify: bool | str | None = None) -> "FaissKnowledgeBase":
        """Loads the current version; refuses a KB from another embedder or with damaged files."""
        options = options or LoadOptions()
        if verify is not None:
            options = LoadOptions(**{**vars(options), "verify": verify if isinstance(verify, str) else
                                     ("auto" if verify else "off")})
        path = Path(path)
        for attempt in range(LOAD_ATTEMPTS):
            name = current_name(path)
            try:
                return cls._load_version(path, current_version(path), embedder, options)
            except KnowledgeBaseNotFoundError:
                raise  # no KB there (no CURRENT): nothing a retry can change
            except (KnowledgeBaseCorruptError, OSError):
                # A writer published a newer version and pruned this one while it was being resolved or read
                # (files gone mid-load): load the new one. A version that stays CURRENT and cannot be read is damaged.
                if attempt + 1 == LOAD_ATTEMPTS or current_name(path) == name:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load_version(cls, path: Path, version: Path, embedder, options: LoadOptions) -> "FaissKnowledgeBase":
        manifest = Manifest.load(version)
        if manifest.embedder_hash != embedder.weights_hash or manifest.dim != embedder.dim:
            raise KnowledgeBaseMismatchError(
                f"knowledge base {path} was built with embedder {manifest.embedder!r} "
                f"(weights {manifest.embedder_hash}, dim {manifest.dim}) but the server is configured with "
                f"{embedder.name!r} (weights {embedder.weights_hash}, dim {embedder.dim}); "
                "rebuild the KB or configure the matching embedder (KGV_EMBEDDER__MODEL)",
                metadata={"kb_embedder": manifest.embedder, "kb_embedder_hash": manifest.embedder_hash,
                          "embedder_hash": embedder.weights_hash})
        _check_file_set(path, version, manifest)
        if options.verify != "off":
            manifest.verify_files(version, options.verify)
        try:
            family = manifest.index["family"]
            if family not in PARAM_MINIMUMS:
                raise KnowledgeBaseCorruptError(f"knowledge base {path} ({version.name}): unknown index family "
                                                f"{family!r} in its manifest")
            check_params(family, manifest.index.get("params", {}))  # e.g. nprobe 0 would answer no hits
            params = {**manifest.index.get("params", {}), **{k: v for k, v in options.search_params.items()
                                                             if k in SEARCH_PARAMS and k in PARAM_MINIMUMS[family]}}
            vectors = open_vectors(version / VECTORS_NAME, manifest.dim) if family == "ivfpq" else None
            index = VectorIndex(load_index(version / INDEX_NAME, options.mmap), family, params, vectors)
            vector_facts = open_vector_facts(version / VECTOR_FACTS_NAME)
            store = FactStore(version / STORE_NAME)
            bm25 = Bm25Index(version / BM25_DIR, manifest.bm25, options.mmap) if manifest.bm25 else None
        except KnowledgeBaseCorruptError:
            raise
        except Exception as exc:  # faiss raises RuntimeError on damaged files, bm25s ValueError/OSError
            raise KnowledgeBaseCorruptError(f"knowledge base {path} ({version.name}) cannot be read: {exc}") from exc
        if not index.ntotal == len(vector_facts) == manifest.num_vectors or index.index.d != manifest.dim:
            raise KnowledgeBaseCorruptError(
                f"knowledge base {path} ({version.name}): index holds {index.ntotal} vectors of dim "
                f"{index.index.d} for {len(vector_facts)} vector rows, the manifest says {manifest.num_vectors} "
                f"of dim {manifest.dim}")
        stored = store.count()
        # every vector row names a stored fact, in fact order (a fact's vectors are consecutive)
        if stored != manifest.num_facts or (len(vector_facts) and (
                int(vector_facts.min()) < 0 or int(vector_facts.max()) >= stored
                or bool((np.diff(vector_facts) < 0).any()))):
            raise KnowledgeBaseCorruptError(
                f"knowledge base {path} ({version.name}): the fact store holds {stored} facts, the manifest says "
                f"{manifest.num_facts}, or the vector rows do not map onto them in order")
        return cls(path, version, manifest, index, vector_facts, store, bm25, embedder, options)

    def search(self, queries: Sequence[str], top_k: int, mode: RetrievalMode,
               vectors: np.ndarray | None = None) -> list[list[KbHit]]:
        """Best facts per query, best first (scores: cosine, BM25 or fused reciprocal rank by mode).

        vectors: the queries' embeddings when the caller has them (the server embeds claims through its
        micro-batcher); unset = embedded here with the KB's embedder.
        """
        if top_k < 0:
            raise InvalidArgumentError.single("top_k", f"must not be negative, got {top_k}")
        if mode not in self.info.modes:
            raise FailedPreconditionError(
                f"knowledge base {self.info.kb_id} supports retrieval modes "
                f"{[m.value for m in self.info.modes]}, not {mode.value!r} (it was built without BM25)",
                reason="RETRIEVAL_MODE_UNAVAILABLE")
        if not queries or top_k == 0:
            return [[] for _ in queries]
        cap = self.options.max_per_document
        pool = top_k if mode is not RetrievalMode.HYBRID and not cap else max(top_k, self.options.candidates)
        if mode is not RetrievalMode.BM25 and vectors is None:
            vectors = self._embedder.encode(list(queries))
        # A query left short of top_k hits (one document owning the pool when hits per document are limited)
        # searches again with a wider pool, until it has them or nothing more can come: no more facts, no more
        # lexical matches, or fewer documents than top_k hits need.
        want = min(top_k, self.manifest.num_documents * cap) if cap else top_k
        out: list[list[KbHit]] = [[] for _ in queries]
        todo = list(range(len(queries)))
        while todo:
            found = self._search_pool([queries[i] for i in todo], None if vectors is None else
                                      np.asarray(vectors)[todo], top_k, mode, pool)
            short = []
            for i, (hits, more) in zip(todo, found):
                out[i] = hits
                if len(hits) < want and more and pool < self.manifest.num_facts:
                    short.append(i)
            todo, pool = short, 4 * pool
        return out

    def _search_pool(self, queries: Sequence[str], vectors: np.ndarray | None, top_k: int, mode: RetrievalMode,
                     pool: int) -> list[tuple[list[KbHit], bool]]:
        """Hits per query from the best `pool` facts of each retriever, and whether a wider pool could add any."""
        dense = lexical = None
        if mode is not RetrievalMode.BM25:
            # a fact may own two vectors: fetch twice the pool, keep each fact's best
            scores, rows = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), 2 * pool)
            dense = [self._facts_of(r, s, pool) for r, s in zip(rows, scores)]
        if mode is not RetrievalMode.DENSE:
            lexical = self._bm25.search(queries, pool)
        out = []
        for i in range(len(queries)):
            if mode is RetrievalMode.HYBRID:
                rows, scores = _rrf([dense[i][0], lexical[i][0]], [1.0, self.options.bm25_weight], self.options.rrf_k)
            else:
                rows, scores = dense[i] if mode is RetrievalMode.DENSE else lexical[i]
            more = any(len(found[i][0]) >= pool for found in (dense, lexical) if found is not None)
            out.append((self._hits(rows, scores, top_k), more))
        return out

    def _facts_of(self, vector_rows: np.ndarray, scores: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Fact rows in order of their best vector (results are sorted, so the first hit is the best)."""
        keep = vector_rows >= 0
        facts = np.asarray(self._vector_facts[vector_rows[keep]], dtype=np.int64)
        _, first = np.unique(facts, return_index=True)
        first = np.sort(first)[:limit]
        return facts[first], scores[keep][first]

    def _hits(self, rows: np.ndarray, scores: np.ndarray, top_k: int) -> list[KbHit]:
        hits: list[KbHit] = []
        per_doc: dict[int, int] = {}
        cap = self.options.max_per_document
        # facts are read in growing slices of the ranking, not all at once: a few rows usually make top_k hits
        start, size = 0, max(2 * top_k, 32)
        while start < len(rows) and len(hits) < top_k:
            facts: list[Fact | None] = self._store.get(rows[start:start + size].tolist())
            for fact, score in zip(facts, scores[start:start + size].tolist()):
                if fact is None:
                    continue
                if cap:
                    if per_doc.get(fact.doc, 0) >= cap:
                        continue
                    per_doc[fact.doc] = per_doc.get(fact.doc, 0) + 1
                hits.append(KbHit(fact.fact_id, fact.text, fact.source, fact.title, float(score)))
                if len(hits) >= top_k:
                    break
            start, size = start + size, 2 * size
        return hits

    def close(self) -> None:
        self._store.close()
