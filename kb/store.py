"""The fact store: SQLite rows addressed by vector id, plus the documents they came from."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

STORE_NAME = "facts.sqlite"
_SCHEMA = """
CREATE TABLE documents (doc INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, context TEXT NOT NULL, source TEXT);
CREATE TABLE facts (
    row INTEGER PRIMARY KEY, fact_id TEXT NOT NULL UNIQUE, doc INTEGER NOT NULL, doc_id TEXT NOT NULL,
    text TEXT NOT NULL, source TEXT NOT NULL, title TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    text_key INTEGER NOT NULL);
CREATE TABLE vectors (vrow INTEGER PRIMARY KEY, row INTEGER NOT NULL, embed_key BLOB NOT NULL);
CREATE INDEX facts_doc_id ON facts (doc_id);
CREATE INDEX documents_doc_id ON documents (doc_id);
"""
# The source context lookup of every document added (StoreWriter.source_context): without it, each lookup scanned every
# document sharing the id, quadratic in a corpus whose rows share an id across many sources. Stores written before it
# get it when extended.
_SOURCE_INDEX = "CREATE INDEX IF NOT EXISTS documents_doc_id_source ON documents (doc_id, source)"
# How many chunks the documents of each source id had, duplicates dropped included: fact ids number on from it, so a
# build and a build followed by `kb add` give the same ids. Stores written before it lack it (see chunk_counts).
_CHUNK_COUNTS = "CREATE TABLE IF NOT EXISTS chunk_counts (doc_id TEXT PRIMARY KEY, chunks INTEGER NOT NULL)"


@dataclass(frozen=True)
class Fact:
    fact_id: str
    doc_id: str
    text: str
    source: str
    title: str
    doc: int = -1  # internal document number: tells apart documents that share a source id
    start: int = 0  # [start, end) of the fact in its document's text
    end: int = 0


@dataclass(frozen=True)
class NewFact:
    """A fact on its way into the store: its de-duplication key and its model inputs (cache key, text)."""

    fact: Fact
    text_key: int
    inputs: tuple[tuple[bytes, str], ...]


def _chunks_shown(doc_id: str, fact_id: str) -> int:
    """How many chunks a fact id shows its source id had at least: "id" 1, "id#k" (or "id#k~n") k + 1."""
    if fact_id == doc_id:
        return 1
    k = fact_id[len(doc_id) + 1:].partition("~")[0] if fact_id.startswith(f"{doc_id}#") else ""
    return int(k) + 1 if k.isdigit() else 0


class StoreWriter:
    """Appends documents and facts to a store file (new, or a copy of the previous version's)."""

    def __init__(self, path: Path, create: bool):
        self._con = sqlite3.connect(path)
        # the staging directory is published only after an fsync; a crash discards it whole
        self._con.execute("PRAGMA journal_mode=MEMORY")
        self._con.execute("PRAGMA synchronous=OFF")
        if create:
            self._con.executescript(_SCHEMA)
            self._con.execute(_CHUNK_COUNTS)
        else:
            if "source" not in {row[1] for row in self._con.execute("PRAGMA table_info(documents)")}:
                # stores written before documents kept their source: those rows match any source (NULL)
                self._con.execute("ALTER TABLE documents ADD COLUMN source TEXT")
            self._con.execute(_CHUNK_COUNTS)  # stores written before chunks were counted (see chunk_counts)
        self._con.execute(_SOURCE_INDEX)
        self.rows = int(self._con.execute("SELECT COUNT(*) FROM facts").fetchone()[0])
        self.vectors = int(self._con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])
        self.docs = int(self._con.execute("SELECT COALESCE(MAX(doc) + 1, 0) FROM documents").fetchone()[0])

    def text_keys(self) -> set[int]:
        return {k for (k,) in self._con.execute("SELECT text_key FROM facts")}

    def chunk_counts(self, doc_ids: Sequence[str]) -> dict[str, int]:
        """How many chunks the documents of each of these source ids had (fact ids continue the count): the stored
        count, which includes chunks dropped as duplicates; for a source id stored before chunks were counted, the
        most its fact ids show ("id" is 1, "id#k" k + 1) or its number of facts, whichever is more."""
        counts: dict[str, int] = {}
        unique = sorted(set(doc_ids))
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            marks = ",".join("?" * len(part))
            counts.update(self._con.execute(
                f"SELECT doc_id, chunks FROM chunk_counts WHERE doc_id IN ({marks})", part))
            legacy = [d for d in part if d not in counts]
            if not legacy:
                continue
            marks = ",".join("?" * len(legacy))
            for doc_id, fact_id in self._con.execute(
                    f"SELECT doc_id, fact_id FROM facts WHERE doc_id IN ({marks})", legacy):
                counts[doc_id] = max(counts.get(doc_id, 0) + 1, _chunks_shown(doc_id, fact_id))
        return counts

    def save_chunk_counts(self, counts: dict[str, int]) -> None:
        self._con.executemany("INSERT OR REPLACE INTO chunk_counts (doc_id, chunks) VALUES (?, ?)", counts.items())

    def source_context(self, doc_id: str, source: str = "") -> str | None:
        """The context of the first document stored under this id and source, None for a new pair.

        Corpora repeat ids across collections (MedQuAD's "0000022" names pages of five sites), so a
        document shares its context only with documents that carry both its id and its source.
        """
        # two index seeks (a source, or none stored): one query with "OR source IS NULL" read every row of the id
        found = [row for row in (
            self._con.execute("SELECT doc, context FROM documents WHERE doc_id = ? AND source = ? ORDER BY doc LIMIT 1",
                              (doc_id, source)).fetchone(),
            self._con.execute("SELECT doc, context FROM documents WHERE doc_id = ? AND source IS NULL ORDER BY doc "
                              "LIMIT 1", (doc_id,)).fetchone()) if row is not None]
        return min(found)[1] if found else None

    def add_document(self, doc_id: str, context: str, source: str = "") -> int:
        doc = self.docs
        self._con.execute("INSERT INTO documents (doc, doc_id, context, source) VALUES (?, ?, ?, ?)",
                          (doc, doc_id, context, source))
        self.docs += 1
        return doc

    def add_facts(self, facts: Sequence[NewFact]) -> list[int]:
        """Inserts facts as the next rows and their inputs as the next vector rows; returns each vector's fact row.

        A fact id that clashes (a source id that itself looks like "id#k") gets a "~n" suffix.
        """
        vector_facts = []
        for item in facts:
            f = item.fact
            fact_id = f.fact_id
            for attempt in range(1, 1_000_000):
                try:
                    self._con.execute(
                        "INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.rows, fact_id, f.doc, f.doc_id, f.text, f.source, f.title, f.start, f.end,
                         item.text_key))
                    break
                except sqlite3.IntegrityError as exc:
                    if "facts.fact_id" not in str(exc):  # e.g. a None source: no other id would help
                        raise
                    fact_id = f"{f.fact_id}~{attempt}"
            for key, _ in item.inputs:
                self._con.execute("INSERT INTO vectors VALUES (?, ?, ?)", (self.vectors, self.rows, key))
                self.vectors += 1
                vector_facts.append(self.rows)
            self.rows += 1
        return vector_facts

    def embed_inputs(self, batch_rows: int = 10_000) -> Iterator[list[str]]:
        """The text BM25 indexes for every fact, in row order, in batches."""
        cur = self._con.execute(
            "SELECT f.text, d.context FROM facts f JOIN documents d ON d.doc = f.doc ORDER BY f.row")
        from .chunking import embed_input

        while rows := cur.fetchmany(batch_rows):
            yield [embed_input(text, context) for text, context in rows]

    def commit(self) -> None:
        self._con.commit()

    def close(self) -> None:
        self._con.commit()
        self._con.close()


def stored_text_keys(path: Path) -> Iterator[int]:
    """The de-duplication key of every fact of a published store, streamed (a fact's text in its source context)."""
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        yield from (k for (k,) in con.execute("SELECT text_key FROM facts"))
    finally:
        con.close()


def embed_key_rows(path: Path) -> dict[bytes, int]:
    """Embedding-cache index of a published store: embedder input key -> vector row."""
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return {bytes(k): r for r, k in con.execute("SELECT vrow, embed_key FROM vectors")}
    finally:
        con.close()


class FactStore:
    """Read-only access to the facts of a published KB version."""

    def __init__(self, path: Path):
        self._con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        self._lock = threading.Lock()

    def get(self, rows: Sequence[int]) -> list[Fact | None]:
        wanted = sorted({int(r) for r in rows if r >= 0})
        found: dict[int, Fact] = {}
        with self._lock:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for row, *values in self._con.execute(
                    "SELECT row, fact_id, doc_id, text, source, title, doc, start, end FROM facts "
                    f"WHERE row IN ({marks})", chunk
                ):
                    found[row] = Fact(*values)
        return [found.get(int(r)) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM facts").fetchone()[0])

    def documents(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def close(self) -> None:
        self._con.close()

    def __del__(self) -> None:
        # sqlite3.Connection sits in a reference cycle of its own (its statement cache): without this, a store
        # dropped by its last user (a replaced KB version once its last request ends) kept its file open until
        # the cycle collector happened to run. Nothing holds the store any more, so nothing is mid-query.
        con = getattr(self, "_con", None)
        if con is not None:
            try:
                con.close()
            except Exception:  # interpreter shutdown, a connection already closed
                pass
