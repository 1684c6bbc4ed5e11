"""The float16 vector file: every fact's embedding, the embedding cache and IVF-PQ refinement data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

VECTORS_NAME = "vectors.f16"
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


class VectorWriter:
    """Appends float16 rows to a vector file."""

    def __init__(self, path: Path, dim: int):
        self.dim = dim
        self._fh = open(path, "ab")
        self.rows = self._fh.tell() // (dim * np.dtype(DTYPE).itemsize)

    def append(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dim {self.dim}, got shape {vectors.shape}")
        self._fh.write(np.ascontiguousarray(vectors, dtype=DTYPE).tobytes())
        self.rows += len(vectors)

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()


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
        missing = []
        for i, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None or self._vectors is None:
                missing.append(i)
            else:
                out[i] = self._vectors[row]
        if missing:
            fresh = encode([texts[i] for i in missing])
            out[missing] = np.asarray(fresh, dtype=np.float32).astype(DTYPE)
        return out, len(missing)
