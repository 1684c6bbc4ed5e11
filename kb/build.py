"""Building and extending a knowledge base: chunk, de-duplicate, embed (cached), index, publish atomically."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from .chunking import ChunkSpec, chunk_spans, embed_input, embed_key, lead, model_inputs, text_key
from .errors import KnowledgeBaseCorruptError, KnowledgeBaseMismatchError
from .index import (INDEX_NAME, add_vectors, check_overrides, choose_family, index_params, load_index, new_index,
                    save_index, training_note)
from .ingest import Document
from .layout import (MANIFEST_NAME, check_output_dir, current_version, is_kb, new_staging_dir, next_version_name,
                     publish, remove_if_unborn, remove_stale_staging, writer_lock)
from .lexical import BM25_DIR, build_bm25
from .manifest import FileEntry, Manifest
from .store import STORE_NAME, Fact, NewFact, StoreWriter, embed_key_rows, stored_text_keys
from .vectors import VECTOR_FACTS_NAME, VECTORS_NAME, EmbeddingCache, VectorWriter, open_vectors


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    index: str = "auto"
    """Index family: flat, hnsw, ivfpq, or auto (by size)."""
    index_params: dict = field(default_factory=dict)
    """Family parameter overrides (M, efConstruction, efSearch, nlist, m, nbits, nprobe, refine_k)."""
    bm25: bool = True
    """Build the BM25 index (needed for bm25 and hybrid retrieval)."""
    keep_versions: int = 2
    """Published versions kept on disk (servers may still serve the previous one)."""
    batch_facts: int = 2048
    """Facts embedded per batch (the encoder sorts each batch by length)."""


@dataclass
class _Stats:
    documents: int = 0
    facts: int = 0
    vectors: int = 0
    duplicates_dropped: int = 0
    embedded: int = 0
    reused: int = 0
    embed_s: float = 0.0


NO_TEXT = "the inputs hold no document text (check --text-field and the input files)"


class _Progress:
    """A tqdm bar of input documents on stderr (with a total and ETA when the inputs can be counted up front)
    plus one line per stage; quiet when progress is off."""

    def __init__(self, enabled: bool, stages: bool | None = None):
        self.enabled = enabled
        self.stages = enabled if stages is None else stages
        self.bar = None

    def stage(self, message: str) -> None:
        if self.stages:
            print(f"kgverify kb: {message}", file=sys.stderr, flush=True)

    def start(self, total: int | None):
        from .progress import progress_bar

        self.bar = progress_bar(desc="documents", unit="doc", total=total, disable=not self.enabled, mininterval=0.5)

    def advance(self, position: int, **postfix) -> None:
        """Moves the bar to `position` documents done, showing the counts as they are now."""
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)  # before update(), which draws the bar
            self.bar.update(max(0, position - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _rows_in(docs) -> int | None:
    """How many rows an input holds, when that can be known up front. A reader of files (DocumentReader) reads and
    checks every row for it, once: bad input fails here, before anything is embedded."""
    count = getattr(docs, "count_rows", None)
    if count is not None:
        return count()
    return len(docs) if hasattr(docs, "__len__") else None


def _encode_in_batches(embedder, texts: list[str], done) -> np.ndarray:
    """embedder.encode over texts one embedding batch at a time, longest first (as the encoder orders them
    itself), calling done(encoded so far, all) after each batch so progress moves while a flush embeds."""
    size = max(1, int(getattr(embedder, "batch_size", 0) or 64))
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for start in range(0, len(order), size):
        rows = sorted(order[start:start + size])  # inputs of like length, in input order
        out[rows] = np.asarray(embedder.encode([texts[i] for i in rows]), dtype=np.float32)
        done(start + len(rows), len(order))
    return out


class _Ingest:
    """Streams documents into the store and vector file; duplicate facts are dropped, ids kept unique."""

    def __init__(self, spec: ChunkSpec, store: StoreWriter, vectors: VectorWriter, cache: EmbeddingCache, embedder,
                 progress: _Progress):
        self.spec, self.store, self.vectors, self.cache, self.embedder = spec, store, vectors, cache, embedder
        self.progress = progress
        self.stats = _Stats()
        self.seen = store.text_keys()
        self.counts: dict[str, int] = {}
        self.appending = store.rows > 0
        self.pending: list[NewFact] = []
        self.read = 0  # input documents read so far (with text or not)
        self.flushed = 0  # of which every fact is stored and embedded

    def document(self, doc: Document) -> None:
        spans = chunk_spans(doc.text, self.spec)
        if not spans:
            return
        self.stats.documents += 1
        context = lead(doc.text, self.spec)
        if context and doc.named:  # a row without an id is a source of its own
            known = self.store.source_context(doc.doc_id, doc.source)
            context = context if known is None else known
        docno = self.store.add_document(doc.doc_id, context, doc.source)
        if doc.doc_id not in self.counts and self.appending:
            self.counts.update(self.store.chunk_counts([doc.doc_id]))
        first = self.counts.get(doc.doc_id, 0)
        self.counts[doc.doc_id] = first + len(spans)
        for k, (s, e) in enumerate(spans):
            text = doc.text[s:e]
            key = text_key(embed_input(text, context))  # the same sentence about two sources is two facts
            if key in self.seen:
                self.stats.duplicates_dropped += 1
                continue
            self.seen.add(key)
            fact_id = doc.doc_id if len(spans) == 1 and first == 0 else f"{doc.doc_id}#{first + k}"
            self.pending.append(NewFact(Fact(fact_id, doc.doc_id, text, doc.source, doc.title, docno, s, e), key,
                                        tuple((embed_key(t), t) for t in model_inputs(text, context))))

    def _show(self, position: int, embedded: int = 0, reused: int = 0) -> None:
        stats = self.stats
        self.progress.advance(position, facts=stats.facts + len(self.pending), embedded=stats.embedded + embedded,
                              reused=stats.reused + reused)

    def flush(self) -> None:
        """Embeds and stores the pending facts; the bar moves per embedding batch, in documents read."""
        stats, inputs = self.stats, [item for p in self.pending for item in p.inputs]
        base, target = self.flushed, self.read

        def encode(texts: list[str]) -> np.ndarray:
            reused = len(inputs) - len(texts)
            return _encode_in_batches(self.embedder, texts, lambda done, total: self._show(
                base + (target - base) * done // total, done, reused))

        if self.pending:
            start = time.perf_counter()
            vecs, embedded = self.cache.embed([text for _, text in inputs], [key for key, _ in inputs], encode,
                                              self.embedder.dim)
            stats.embed_s += time.perf_counter() - start
            self.vectors.append(vecs, np.asarray(self.store.add_facts(self.pending), dtype=np.int32))
            stats.facts += len(self.pending)
            stats.vectors += len(inputs)
            stats.embedded += embedded
            stats.reused += len(inputs) - embedded
            self.pending.clear()
        self.flushed = target
        self._show(target)


def _ingest(docs: Iterable[Document], spec: ChunkSpec, store: StoreWriter, vectors: VectorWriter,
            cache: EmbeddingCache, embedder, options: BuildOptions, progress: _Progress) -> _Stats:
    ingest = _Ingest(spec, store, vectors, cache, embedder, progress)
    progress.start(_rows_in(docs))  # also without a bar: a reader's bad rows fail before any embedding
    for doc in docs:
        ingest.read = getattr(docs, "rows", ingest.read + 1)  # a reader also counts the rows it skipped
        ingest.document(doc)
        if len(ingest.pending) >= options.batch_facts:
            ingest.flush()
    ingest.read = getattr(docs, "rows", ingest.read)
    ingest.flush()
    progress.close()
    store.save_chunk_counts(ingest.counts)  # a later `kb add` numbers on from these
    store.commit()
    return ingest.stats


def _run_summary(stats: _Stats, seconds: float) -> dict:
    """This run's own counts and rates (what the build record and the CLI summary report)."""
    return {"documents": stats.documents, "facts_added": stats.facts, "vectors_added": stats.vectors,
            "duplicates_dropped": stats.duplicates_dropped, "embedded": stats.embedded, "reused": stats.reused,
            "embed_s": round(stats.embed_s, 3), "seconds": round(seconds, 3),
            "embeddings_per_s": round(stats.embedded / stats.embed_s, 2) if stats.embed_s and stats.embedded else None}


def _previous_version(out_dir: Path, report: "_Progress") -> Path | None:
    """The current version to reuse vectors from, or None: none yet, or one too damaged to read (a rebuild is
    how a damaged KB is repaired, so damage must not stop it)."""
    if not is_kb(out_dir):
        return None
    try:
        return current_version(out_dir)
    except KnowledgeBaseCorruptError as exc:
        report.stage(f"the current version is unreadable ({exc.message}); embedding every fact anew")
        log.warning("knowledge base %s: %s; rebuilding without reuse", out_dir, exc.message)
        return None


def _cache_from(previous: Path | None, embedder, report: "_Progress") -> EmbeddingCache:
    """The previous version's vectors, when they came from the same embedder and pass their checksums.

    Reused vectors end up under the new version's fresh checksums, so they are hashed in full first:
    a damaged vector must not be carried into a rebuild that looks healthy."""
    if previous is None:
        return EmbeddingCache()
    try:
        manifest = Manifest.load(previous)
        if manifest.embedder_hash != embedder.weights_hash or manifest.dim != embedder.dim:
            return EmbeddingCache()
        manifest.verify_files(previous, "full")
    except KnowledgeBaseCorruptError as exc:
        report.stage(f"the current version is damaged ({exc.message}); embedding every fact anew")
        log.warning("knowledge base version %s: %s; rebuilding without reuse", previous, exc.message)
        return EmbeddingCache()
    return EmbeddingCache(embed_key_rows(previous / STORE_NAME), open_vectors(previous / VECTORS_NAME, manifest.dim))


def _previous_facts_not_kept(previous: Path | None, store: StoreWriter, report: "_Progress") -> int | None:
    """How many facts of the version this build replaces (the same text in the same source context) it lacks, said
    on stderr when any: `kb build` replaces the KB's content with its inputs, so facts a `kb add` brought, or inputs
    left out this time, are gone from the new version. None when there is no readable previous version."""
    if previous is None:
        return None
    kept = store.text_keys()
    try:
        before = missing = 0
        for key in stored_text_keys(previous / STORE_NAME):
            before += 1
            missing += key not in kept
    except sqlite3.Error as exc:  # a damaged previous version (rebuilt without reuse): nothing to compare with
        log.warning("knowledge base version %s: cannot read its facts (%s)", previous, exc)
        return None
    if missing:
        message = (f"{missing} of the previous version's {before} facts are not in this build: kb build replaces the "
                   "knowledge base's content with its inputs (kb add adds to it); give every input, or add "
                   "documents with kb add")
        if report.stages:
            report.stage(f"warning: {message}")
        else:
            log.warning("knowledge base %s: %s", previous.parent.parent, message)
    return missing


def _finish(staging: Path, out_dir: Path, manifest_fields: dict, stats: _Stats, embedder, progress: _Progress,
            started: float, operation: dict, history: list, keep: int) -> Manifest:
    files = {p.relative_to(staging).as_posix(): vars(FileEntry.of(p))
             for p in sorted(staging.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME}
    kb_id = "kb-" + hashlib.sha256(
        "".join(f"{k}={v['sha256']};" for k, v in sorted(files.items())).encode() + embedder.weights_hash.encode()
    ).hexdigest()[:16]
    seconds = time.perf_counter() - started
    summary = {**operation, **_run_summary(stats, seconds)}
    manifest = Manifest(kb_id=kb_id, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        embedder=embedder.name, embedder_hash=embedder.weights_hash, dim=embedder.dim, files=files,
                        build=summary, history=[*history, {k: summary[k] for k in ("op", "documents", "facts_added",
                                                                                  "embedded", "seconds")}],
                        **manifest_fields)
    manifest.version = next_version_name(out_dir)  # stable: we hold the writer lock
    manifest.save(staging)
    _test_load(staging, out_dir, embedder, progress)
    version = publish(out_dir, staging, keep)
    progress.stage(f"published {version.name} ({kb_id}: {manifest.num_facts} facts) in {out_dir}")
    return manifest


def _test_load(staging: Path, out_dir: Path, embedder, progress: _Progress) -> None:
    """Loads the staged version as a server would (manifest, index, fact store, BM25 and their consistency checks)
    and searches it for one of its own vectors; a version that fails is not published (KnowledgeBaseCorruptError,
    the current version stays). faiss accepted some parameters it could not search with, e.g. nprobe 0."""
    from server.pipeline.errors import KgverifyError
    from server.pipeline.types import RetrievalMode

    from .knowledge_base import FaissKnowledgeBase, LoadOptions

    progress.stage("test-loading the new version")
    try:
        kb = FaissKnowledgeBase._load_version(out_dir, staging, embedder, LoadOptions(verify="off", mmap=True))
        try:
            vectors = open_vectors(staging / VECTORS_NAME, embedder.dim)
            row = len(vectors) // 2
            probe = np.asarray(vectors[row:row + 1], dtype=np.float32)
            if not kb.search(["probe"], 1, RetrievalMode.DENSE, vectors=probe)[0]:
                raise KnowledgeBaseCorruptError(f"a search for its stored vector {row} found nothing")
            if RetrievalMode.BM25 in kb.info.modes:
                kb.search(["probe"], 1, RetrievalMode.BM25)
            del vectors, probe
        finally:
            kb.close()
    except Exception as exc:
        reason = exc.message if isinstance(exc, KgverifyError) else f"{type(exc).__name__}: {exc}"
        raise KnowledgeBaseCorruptError(f"the new version of {out_dir} failed its test load ({reason}); "
                                        "nothing was published") from exc


def _index_and_bm25(staging: Path, dim: int, family: str, params: dict, base_index, start: int,
                    store: StoreWriter, bm25: dict | None, progress: _Progress) -> dict | None:
    vectors = open_vectors(staging / VECTORS_NAME, dim)
    progress.stage(f"indexing {len(vectors) - start} vectors ({family})")
    if base_index is None and (note := training_note(family, params)):
        progress.stage(note)
    index = base_index if base_index is not None else new_index(family, params, dim, vectors)
    add_vectors(index, vectors, start)
    save_index(index, staging / INDEX_NAME)
    del vectors
    if bm25 is None:
        return None
    progress.stage("building BM25")
    return build_bm25(store.embed_inputs(), staging / BM25_DIR, {k: v for k, v in bm25.items() if k != "vocabulary"})


def _check_keep(keep: int) -> None:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"--keep-versions must be at least 1, got {keep!r} (keep 2 or more for a KB a server "
                         "reloads: a reload that races a publish then finds the version it read still there)")


def build_kb(docs: Iterable[Document], out_dir: Path, embedder, *, chunk_chars: int = 500,
             chunking: ChunkSpec | None = None, options: BuildOptions | None = None,
             build_options: dict | None = None, progress: bool = True, stages: bool | None = None) -> Manifest:
    """Builds a new version of the KB at out_dir from documents; readers see old or new, never a mix.

    progress shows a bar on stderr; stages (default: like progress) prints one line per stage.
    """
    spec = chunking or ChunkSpec(max_chars=chunk_chars)
    options = options or BuildOptions()
    out_dir = Path(out_dir).resolve()
    _check_keep(options.keep_versions)
    check_overrides(options.index, options.index_params, embedder.dim)  # before hours of embedding, not after
    check_output_dir(out_dir)
    existed = out_dir.exists()  # an empty directory the user made (its permissions, a mount point) stays
    report = _Progress(progress, stages)
    started = time.perf_counter()
    try:
        return _build_locked(docs, out_dir, embedder, spec, options, build_options, report, started)
    except BaseException:
        remove_if_unborn(out_dir, created=not existed)  # a failed first build leaves no half-made KB directory
        raise


def _build_locked(docs, out_dir: Path, embedder, spec: ChunkSpec, options: BuildOptions, build_options,
                  report: _Progress, started: float) -> Manifest:
    with writer_lock(out_dir):
        remove_stale_staging(out_dir)
        previous = _previous_version(out_dir, report)
        staging = new_staging_dir(out_dir)
        try:
            cache = _cache_from(previous, embedder, report)
            store = StoreWriter(staging / STORE_NAME, create=True)
            writer = VectorWriter(staging / VECTORS_NAME, embedder.dim, staging / VECTOR_FACTS_NAME)
            try:
                stats = _ingest(docs, spec, store, writer, cache, embedder, options, report)
            finally:
                writer.close()
            if store.rows == 0:
                raise ValueError(NO_TEXT)
            dropped = _previous_facts_not_kept(previous, store, report)
            family = choose_family(store.vectors, options.index)
            params = index_params(family, store.vectors, embedder.dim, options.index_params,
                                  strict=options.index != "auto")
            bm25 = _index_and_bm25(staging, embedder.dim, family, params, None, 0, store,
                                   {} if options.bm25 else None, report)
            store.close()
            fields = dict(index={"family": family, "metric": "inner_product", "params": params},
                          num_facts=store.rows, num_vectors=store.vectors, num_documents=store.docs,
                          chunking=spec.to_dict(), bm25=bm25)
            operation = {"op": "build", **(build_options or {}),
                         **({"previous_facts_not_kept": dropped} if dropped is not None else {})}
            return _finish(staging, out_dir, fields, stats, embedder, report, started, operation, [],
                           options.keep_versions)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def add_documents(kb_dir: Path, docs: Iterable[Document], embedder, *, build_options: dict | None = None,
                  keep_versions: int = 2, progress: bool = True, stages: bool | None = None,
                  outcome: dict | None = None) -> Manifest:
    """Appends documents as a new version: only their new facts are embedded; the index is extended.

    With nothing new the current version is returned unchanged; `outcome` (if given) then gets this add's own
    counts and rates ({"unchanged": True, "documents", "facts_added": 0, "duplicates_dropped", "embedded": 0,
    "reused": 0, "embeddings_per_s": None, ...}), which the returned manifest's build record (the previous
    operation's) does not hold. Inputs without any document text are a ValueError, as in build_kb."""
    kb_dir = Path(kb_dir).resolve()
    _check_keep(keep_versions)
    current_version(kb_dir)  # not a KB (missing, no CURRENT): say so before the lock creates anything there
    report = _Progress(progress, stages)
    started = time.perf_counter()
    with writer_lock(kb_dir):
        remove_stale_staging(kb_dir)
        previous = current_version(kb_dir)
        old = Manifest.load(previous)
        if old.embedder_hash != embedder.weights_hash or old.dim != embedder.dim:
            raise KnowledgeBaseMismatchError(
                f"knowledge base {kb_dir} was built with embedder {old.embedder!r} (weights {old.embedder_hash}, "
                f"dim {old.dim}), not {embedder.name!r} (weights {embedder.weights_hash}, dim {embedder.dim}); "
                "add documents with the embedder the KB was built with (--embedder)")
        # The new version copies this one's facts, vectors and index under fresh checksums: verify them
        # in full first, or damage would be carried on looking healthy.
        report.stage("verifying the current version before extending it")
        old.verify_files(previous, "full")
        staging = new_staging_dir(kb_dir)
        try:
            for name in (STORE_NAME, VECTORS_NAME, VECTOR_FACTS_NAME):
                shutil.copyfile(previous / name, staging / name)
            store = StoreWriter(staging / STORE_NAME, create=False)
            writer = VectorWriter(staging / VECTORS_NAME, embedder.dim, staging / VECTOR_FACTS_NAME)
            start = writer.rows
            try:
                stats = _ingest(docs, ChunkSpec.from_dict(old.chunking), store, writer, EmbeddingCache(), embedder,
                                BuildOptions(), report)
            finally:
                writer.close()
            if stats.documents == 0:
                raise ValueError(NO_TEXT)  # as build says: nothing was read, which is not "nothing new"
            if writer.rows == start:
                report.stage("no new facts: the knowledge base is unchanged")
                if outcome is not None:
                    outcome.update(unchanged=True, **_run_summary(stats, time.perf_counter() - started))
                store.close()
                shutil.rmtree(staging, ignore_errors=True)
                return old
            family = old.index["family"]
            bm25 = _index_and_bm25(staging, embedder.dim, family, old.index["params"], load_index(previous / INDEX_NAME),
                                   start, store, old.bm25, report)
            store.close()
            fields = dict(index=old.index, num_facts=store.rows, num_vectors=store.vectors, num_documents=store.docs,
                          chunking=old.chunking, bm25=bm25)
            operation = {"op": "add", "parent": old.kb_id, **(build_options or {})}
            return _finish(staging, kb_dir, fields, stats, embedder, report, started, operation, old.history,
                           keep_versions)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

