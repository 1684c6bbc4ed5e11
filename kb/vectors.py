"""The float16 vector file: every fact's embedding, the embedding cache and IVF-PQ refinement data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

VECTORS_NAME = "vectors.f16"
VECTOR_FACTS_NAME = "vector_facts.i32"  # the fact-store row of each vector (a fact may have two)
DTYPE = np.float16


def canonical(vectors: np.ndarray) -> np.ndarray:
    """float32 vectors as stored (rounded through float16), so a rebuild from cache is bit-identical."""
    return np.ascontiguousarray(vectors, dtype=DTYPE).astype(np.float32)


def open_vectors(path: Path, dim: int) -> np.ndarray:
    """The vectors memory-mapped read-only, shape (n, dim); pages load on demand, not into the heap."""
    size = os.path.getsize(path)
    row_bytes = dim * np.dtype(DTYPE).itemsize
    if size % row_bytes:
        raise ValueError(f"{path} holds {size} bytes, not a whole number of {dim}-dim float16 rows")
    if size == 0:
        return np.zeros((0, dim), dtype=DTYPE)
    return np.memmap(path, dtype=DTYPE, mode="r", shape=(size // row_bytes, dim))


def open_vector_facts(path: Path) -> np.ndarray:
    """The fact row of every vector row, memory-mapped read-only."""
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=np.int32)
    return np.memmap(path, dtype=np.int32, mode="r")


class VectorWriter:
    """Appends float16 rows to a vector file and, when given, their fact rows to the vector-facts file."""

    def __init__(self, path: Path, dim: int, facts_path: Path | None = None):
        self.dim = dim
        self._fh = open(path, "ab")
        self._facts = open(facts_path, "ab") if facts_path is not None else None
        self.rows = self._fh.tell() // (dim * np.dtype(DTYPE).itemsize)

    def append(self, vectors: np.ndarray, fact_rows: np.ndarray | None = None) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dim {self.dim}, got shape {vectors.shape}")
        if (self._facts is None) != (fact_rows is None) or (fact_rows is not None and len(fact_rows) != len(vectors)):
            raise ValueError("give one fact row per vector exactly when the writer has a vector-facts file")
        self._fh.write(np.ascontiguousarray(vectors, dtype=DTYPE).tobytes())
        if self._facts is not None:
            self._facts.write(np.ascontiguousarray(fact_rows, dtype=np.int32).tobytes())
        self.rows += len(vectors)

    def close(self) -> None:
        for fh in (self._fh, self._facts):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()


class EmbeddingCache:
    """Vectors of a previous version by embedder-input key: a rebuild embeds only text it has not seen."""

    def __init__(self, key_rows: dict[bytes, int] | None = None, vectors: np.ndarray | None = None):
        self._rows = key_rows or {}
        self._vectors = vectors

    def __len__(self) -> int:
        return len(self._rows)

    def embed(self, texts: Sequence[str], keys: Sequence[bytes],
              encode: Callable[[list[str]], np.ndarray], dim: int) -> tuple[np.ndarray, int]:
        """float16 vectors for texts (cached ones copied); returns them and how many were embedded."""
        out = np.empty((len(texts), dim), dtype=DTYPE)
        missing: dict[bytes, list[int]] = {}  # the same input twice in a batch is embedded once
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None or self._vectors is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = self._vectors[row]
        if missing:
            fresh = np.asarray(encode([texts[rows[0]] for rows in missing.values()]), dtype=np.float32)
            for vector, rows in zip(fresh.astype(DTYPE), missing.values()):
                out[rows] = vector
        return out, len(missing)
