"""FAISS index families over normalized embeddings: exact flat, HNSW (fp16) and IVF-PQ with float16 refinement."""

from __future__ import annotations

import errno
import math
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np

# FAISS's OpenMP threads spin while they wait; on shared or busy CPUs that made IVF-PQ training 5-30x
# slower here. Sleeping waiters cost microseconds per parallel region. Must be set before faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

INDEX_NAME = "index.faiss"
FAMILIES = ("flat", "hnsw", "ivfpq")
AUTO_FLAT_MAX = 200_000  # exact search stays within a few ms per query up to here
AUTO_HNSW_MAX = 4_000_000  # HNSW keeps ~1 KB per 384-dim vector in RAM; beyond this IVF-PQ (~57 B)
ADD_BATCH = 65_536
# Search-time parameters: they may be overridden at load without rebuilding.
SEARCH_PARAMS = ("efSearch", "nprobe", "refine_k")


def choose_family(num_vectors: int, requested: str = "auto") -> str:
    if requested == "auto":
        if num_vectors <= AUTO_FLAT_MAX:
            return "flat"
        return "hnsw" if num_vectors <= AUTO_HNSW_MAX else "ivfpq"
    if requested not in FAMILIES:
        raise ValueError(f"unknown index family {requested!r}; use one of {', '.join(FAMILIES)} or auto")
    return requested


def _largest_divisor(dim: int, at_most: int) -> int:
    return max(m for m in range(1, min(dim, at_most) + 1) if dim % m == 0)


# The parameters each family takes and the least value of each (faiss aborts the process on some invalid values,
# e.g. HNSW M=0, or builds an index that cannot be searched, e.g. IVF-PQ nprobe=0).
PARAM_MINIMUMS = {
    "flat": {},
    "hnsw": {"M": 2, "efConstruction": 1, "efSearch": 1},
    "ivfpq": {"nlist": 1, "m": 1, "nbits": 1, "nprobe": 1, "refine_k": 0, "train_points": 1},
}
MIN_POINTS_PER_CENTROID = 39  # faiss k-means warns below this many training points per centroid
MAX_NBITS = 16  # bits per PQ code: 2**16 centroids per sub-quantizer is already far past useful


KNOWN_PARAMS = {name: least for family in PARAM_MINIMUMS.values() for name, least in family.items()}


def check_params(family: str, params: dict, other_families: bool = False, dim: int | None = None) -> None:
    """ValueError unless every parameter applies to the family and is in range. other_families: parameters of
    another family are accepted (and unused) too, as build overrides are when the family is chosen by size
    (`--index auto`); a family named explicitly takes only its own. dim: the embedding dimension, which `m`
    must divide."""
    allowed = KNOWN_PARAMS if other_families else PARAM_MINIMUMS[family]
    for name, value in params.items():
        if name not in allowed:
            if other_families or name not in KNOWN_PARAMS:
                raise ValueError(f"unknown index parameter {name!r} (known: {', '.join(KNOWN_PARAMS)})")
            takes = ", ".join(PARAM_MINIMUMS[family]) or "no parameters"
            raise ValueError(f"index parameter {name!r} does not apply to a {family} index (it takes: {takes})")
        if isinstance(value, bool) or not isinstance(value, int) or value < allowed[name]:
            raise ValueError(f"index parameter {name}={value!r} must be an integer of at least {allowed[name]}")
    if params.get("nbits", 0) > MAX_NBITS:
        raise ValueError(f"index parameter nbits={params['nbits']} must be at most {MAX_NBITS}")
    m = params.get("m")
    if dim is not None and m is not None and (m > dim or dim % m):
        near = sorted((d for d in range(1, dim + 1) if dim % d == 0), key=lambda d: (abs(d - m), d))[:2]
        raise ValueError(f"index parameter m={m} must divide the embedding dimension {dim} "
                         f"(e.g. m={' or m='.join(str(d) for d in sorted(near))})")
    points = params.get("train_points")
    need = max(params.get("nlist", 1), 2 ** params.get("nbits", 0))
    if points is not None and points < need:
        raise ValueError(f"index parameter train_points={points} is fewer than the {need} centroids it must train "
                         f"(nlist lists, 2**nbits PQ centroids): use at least {need}")


def check_overrides(requested: str, overrides: dict, dim: int | None = None) -> None:
    """Checks `--index-param` overrides before anything is built: a family named explicitly takes only its own
    parameters; with "auto" any known parameter is accepted (the family follows the size)."""
    if requested == "auto":
        check_params("flat", overrides, other_families=True, dim=dim)
    else:
        check_params(choose_family(0, requested), overrides, dim=dim)


def index_params(family: str, num_vectors: int, dim: int, overrides: dict | None = None,
                 strict: bool = False) -> dict:
    """Complete parameters for a family at this size (overrides win; sizes adapted to tiny KBs).
    ValueError for a parameter out of range, unknown, or (strict: the family was named) of another family."""
    o = {k: int(v) for k, v in (overrides or {}).items() if v is not None}
    check_params(family, o, other_families=not strict, dim=dim)
    if family == "flat":
        return {}
    if family == "hnsw":
        # Measured at 1M MiniLM-shaped vectors (docs/knowledge_base.md): efConstruction 40 capped recall@10 near
        # 0.83; 320 with efSearch 384 reaches 0.967 at 1.3 ms p50.
        return {"M": o.get("M", 32), "efConstruction": o.get("efConstruction", 320),
                "efSearch": o.get("efSearch", 384)}
    if num_vectors < 2:
        raise ValueError(f"an ivfpq index needs at least 2 facts to train (this KB has {num_vectors}); "
                         "use --index flat (or auto)")
    n = num_vectors
    # ~sqrt(N) lists: centroids stay ~1.5 B per vector at 1M (the resident budget is 64 B with ids)
    nlist = o.get("nlist") or 2 ** round(math.log2(max(math.sqrt(n), 1)))
    nlist = max(1, min(nlist, n // MIN_POINTS_PER_CENTROID or 1))  # k-means wants ~39 training points per list
    nbits = min(o.get("nbits", 8), max(1, int(math.log2(max(n / MIN_POINTS_PER_CENTROID, 2)))))  # and per centroid
    m = o["m"] if "m" in o else _largest_divisor(dim, 48)
    params = {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": o.get("nprobe", min(nlist, max(1, nlist // 32))),
              "refine_k": o.get("refine_k", 400), "train_points": min(n, o.get("train_points", 64 * nlist + 10_000))}
    need = max(nlist, 2 ** nbits)  # k-means needs at least one training point per centroid
    if params["train_points"] < need:
        raise ValueError(f"index parameter train_points={params['train_points']} is fewer than the {need} centroids "
                         f"it must train ({nlist} lists, {2 ** nbits} PQ centroids): use at least {need}")
    return params


def training_note(family: str, params: dict) -> str | None:
    """A one-line note when IVF-PQ trains on fewer points than faiss recommends per centroid (faiss would print
    one warning per sub-quantizer, 48 lines on a tiny KB); None otherwise."""
    if family != "ivfpq":
        return None
    centroids = max(params["nlist"], 2 ** params["nbits"])
    if params["train_points"] >= MIN_POINTS_PER_CENTROID * centroids:
        return None
    return (f"IVF-PQ trains its centroids (nlist={params['nlist']}, {2 ** params['nbits']} per PQ sub-quantizer) on "
            f"{params['train_points']} vectors, fewer than the {MIN_POINTS_PER_CENTROID} per centroid k-means "
            "wants: the index is coarse (--index flat is exact and small at this size)")


def _batches(vectors: np.ndarray, start: int = 0):
    for i in range(start, len(vectors), ADD_BATCH):
        yield i, np.ascontiguousarray(vectors[i:i + ADD_BATCH], dtype=np.float32)


def new_index(family: str, params: dict, dim: int, vectors: np.ndarray):
    """An empty (trained, for IVF-PQ) index; training samples rows of the float16 vectors."""
    import faiss

    if family == "flat":
        return faiss.IndexFlatIP(dim)
    if family == "hnsw":
        # Stored vectors are float16 already (kb.vectors.canonical), so fp16 storage is lossless; it halves
        # the memory of float32 storage and built 2.7x faster here (distance computations are memory-bound).
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, params["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["efConstruction"]
        index.train(np.zeros((1, dim), dtype=np.float32))  # fp16 needs no statistics
        return index
    # L2 on unit vectors ranks like inner product, and residual PQ is most accurate under L2.
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"])
    # too few points per centroid is reported once by the build (training_note), not by faiss once per
    # sub-quantizer
    index.cp.min_points_per_centroid = 1
    index.pq.cp.min_points_per_centroid = 1
    rng = np.random.default_rng(0)
    take = min(len(vectors), params["train_points"])
    rows = np.sort(rng.choice(len(vectors), size=take, replace=False)) if take < len(vectors) else slice(None)
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    return index


def add_vectors(index, vectors: np.ndarray, start: int = 0, progress: Callable[[int], None] | None = None) -> None:
    """Adds rows start.. of the float16 vectors, so index row ids equal fact-store rows."""
    for _, batch in _batches(vectors, start):
        index.add(batch)
        if progress:
            progress(len(batch))


_FAISS_WRITE_ERROR = re.compile(r"write error in (?P<path>.+?): .*\((?P<reason>[^()]+)\)\s*$", re.S)


def save_index(index, path: Path) -> None:
    """Writes the index; a failed write (disk full, read-only) is an OSError naming the file, as Python's own
    writes are, not faiss's RuntimeError with a C++ assertion."""
    import faiss

    try:
        faiss.write_index(index, str(path))
    except RuntimeError as exc:
        found = _FAISS_WRITE_ERROR.search(str(exc))
        if found is None and "write" not in str(exc).lower():
            raise
        reason = found["reason"] if found else "faiss could not write the index"
        code = next((e for e in errno.errorcode if os.strerror(e) == reason), errno.EIO)
        raise OSError(code, reason, str(path)) from exc


def load_index(path: Path, mmap: bool = False):
    import faiss

    # MMAP_IFC maps flat codes (flat, HNSW storage) and IVF lists read-only instead of copying them.
    # IVF-PQ's precomputed table costs nlist * m * 2**nbits floats (50 B per vector at 1M): skipped,
    # the per-list tables are computed at search time instead.
    flags = faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE
    if mmap:
        flags |= faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
    return faiss.read_index(str(path), flags)


class VectorIndex:
    """Search over one family: scores are cosine similarities (inner products of unit vectors)."""

    def __init__(self, index, family: str, params: dict, vectors: np.ndarray | None = None):
        import faiss

        self.index = index
        self.family = family
        self.params = dict(params)
        self._vectors = vectors
        if family == "hnsw":
            faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
        elif family == "ivfpq":
            faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each shape (len(queries), k'), best first; rows of -1 are padding."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.family == "hnsw" and k > int(self.params["efSearch"]):
            import faiss

            # HNSW finds at most about efSearch neighbours: a pool wider than it came back short
            return self.index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=k))
        if self.family != "ivfpq":
            return self.index.search(queries, k)
        refine = int(self.params.get("refine_k", 0))
        dist, rows = self._search_ivf(queries, max(k, refine) if self._vectors is not None else k, k)
        if self._vectors is None or not refine:
            return (1.0 - dist / 2.0).astype(np.float32), rows
        return self._refine(queries, rows, k)

    def _search_ivf(self, queries: np.ndarray, fetch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF search for `fetch` rows; a query whose nprobe lists hold fewer than k vectors (a small KB, or one
        document's facts filling the lists nearest the query) probes 4x more lists, up to all of them."""
        import faiss

        dist, rows = self.index.search(queries, fetch)
        nlist, nprobe = int(faiss.extract_index_ivf(self.index).nlist), int(self.params["nprobe"])
        short = np.flatnonzero((rows >= 0).sum(axis=1) < k)
        while len(short) and nprobe < nlist:
            nprobe = min(nlist, 4 * nprobe)
            more_dist, more_rows = self.index.search(queries[short], fetch,
                                                     params=faiss.SearchParametersIVF(nprobe=nprobe))
            dist[short], rows[short] = more_dist, more_rows
            short = short[(more_rows >= 0).sum(axis=1) < k]
        return dist, rows

    def _refine(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Re-scores PQ candidates exactly with float16 vectors read from the memory-mapped file."""
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, (q, cand) in enumerate(zip(queries, candidates)):
            cand = cand[cand >= 0]
            if not len(cand):
                continue
            order = np.argsort(cand)  # sorted reads are kinder to the page cache
            exact = np.asarray(self._vectors[cand[order]], dtype=np.float32) @ q
            best = np.argsort(-exact, kind="stable")[:k]
            scores[i, :len(best)] = exact[best]
            rows[i, :len(best)] = cand[order][best]
        return scores, rows
