"""The fact store: SQLite rows addressed by vector id."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

STORE_NAME = "facts.sqlite"


@dataclass(frozen=True)
class Fact:
    fact_id: str
    doc_id: str
    text: str
    source: str
    title: str


def write_store(path: Path, facts: Iterable[Fact]) -> int:
    """Writes facts in vector-id order; returns how many."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(
            "CREATE TABLE facts (row INTEGER PRIMARY KEY, fact_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, "
            "text TEXT NOT NULL, source TEXT NOT NULL, title TEXT NOT NULL)"
        )
        count = 0
        batch = []
        for fact in facts:
            batch.append((count, fact.fact_id, fact.doc_id, fact.text, fact.source, fact.title))
            count += 1
            if len(batch) >= 10_000:
                con.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?)", batch)
                batch.clear()
        con.executemany("INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?)", batch)
        con.commit()
    finally:
        con.close()
    return count


class FactStore:
    """Read-only access to the facts of a KB."""

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
                    f"SELECT row, fact_id, doc_id, text, source, title FROM facts WHERE row IN ({marks})", chunk
                ):
                    found[row] = Fact(*values)
        return [found.get(int(r)) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT COUNT(*) FROM facts").fetchone()[0])

    def close(self) -> None:
        self._con.close()
