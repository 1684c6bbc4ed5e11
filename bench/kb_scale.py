#!/usr/bin/env python
"""Index scale benchmark: 1M vectors shaped like real MiniLM embeddings; flat vs HNSW vs IVF-PQ (JSON on stdout).

Data: real all-MiniLM-L6-v2 embeddings of MedQuAD facts (the vectors of the KB bench/kb.py builds) and of
PubMedQA context chunks (embedded here once, cached in --work). 1,000 of them are held out as queries; faiss
k-means (1,024 centroids) is fitted to the rest; N vectors are sampled around the centroids (clusters drawn
in proportion to their real sizes, per-dimension Gaussian spread equal to the cluster's real spread),
normalised and stored as the float16 vector file a KB keeps. Ground truth: exact inner-product top-10.

Indexes are built with the product code (kb.index) and each is measured in a fresh process: resident bytes
per vector = (RSS after loading - RSS before) / N, the float16 refinement file of IVF-PQ counted as disk
(memory-mapped), then single-query latency (p50/p99 over the held-out queries) and recall@10 vs exact.

    nice -n 10 .venv/bin/python bench/kb_scale.py --work /tmp/kgv-bench --kb /tmp/kgv-bench/medquad-kb
"""
from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP workers that sleep instead of spinning: 40% more embeddings/s with torch's two threads on the shared
# 2-core machine (set before torch or faiss load their OpenMP runtimes).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PUBMEDQA = REPO.parent / "shared" / "data" / "kb" / "pubmedqa.jsonl.gz"
DIM = 384
QUERIES = 1000
CENTROIDS = 1024
SWEEPS = {"flat": [{}], "hnsw": [{"efSearch": 64}, {"efSearch": 128}, {"efSearch": 256}],
          "ivfpq": [{"nprobe": 16, "refine_k": 100}, {"nprobe": 32, "refine_k": 100}, {"nprobe": 64, "refine_k": 100},
                    {"nprobe": 32, "refine_k": 0}]}


def eprint(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def pubmedqa_vectors(work: Path) -> np.ndarray:
    """Embeddings of PubMedQA context passages chunked like the KB (cached in work)."""
    from kb.chunking import ChunkSpec, chunk_spans
    from kb.vectors import VectorWriter, open_vectors

    path = work / "pubmedqa.f16"
    if path.is_file():
        return open_vectors(path, DIM)
    from kb.embedder import SentenceTransformerEmbedder

    texts = []
    with gzip.open(PUBMEDQA, "rt", encoding="utf-8") as fh:
        for line in fh:
            contexts = json.loads(line)["CONTEXTS"]
            for passage in contexts if isinstance(contexts, list) else ast.literal_eval(contexts):
                texts.extend(passage[s:e] for s, e in chunk_spans(passage, ChunkSpec(max_chars=500)))
    eprint(f"embedding {len(texts)} PubMedQA chunks")
    start = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    writer = VectorWriter(tmp, DIM)
    for i in range(0, len(texts), 1024):
        writer.append(embedder.encode(texts[i:i + 1024]))
    writer.close()
    os.replace(tmp, path)
    eprint(f"embedded in {time.perf_counter() - start:.0f}s")
    return open_vectors(path, DIM)


def synthesize(real: np.ndarray, n: int, out: Path, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Held-out queries, and n vectors sampled around k-means centroids of the rest, written to out."""
    import faiss

    from kb.vectors import VectorWriter

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    queries = np.ascontiguousarray(real[order[:QUERIES]], dtype=np.float32)
    train = np.ascontiguousarray(real[order[QUERIES:]], dtype=np.float32)
    start = time.perf_counter()
    kmeans = faiss.Kmeans(DIM, CENTROIDS, niter=20, seed=seed, spherical=False, max_points_per_centroid=512)
    kmeans.train(train)
    _, assign = kmeans.index.search(train, 1)
    assign = assign[:, 0]
    sizes = np.bincount(assign, minlength=CENTROIDS)
    resid = train - kmeans.centroids[assign]
    global_std = resid.std(axis=0)
    std = np.stack([resid[assign == c].std(axis=0) if sizes[c] > 1 else global_std for c in range(CENTROIDS)])
    real_cos = float(np.mean(np.sum(train * kmeans.centroids[assign], axis=1)
                             / np.linalg.norm(kmeans.centroids[assign], axis=1)))
    writer = VectorWriter(out, DIM)
    synth_cos = []
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        cl = rng.choice(CENTROIDS, size=m, p=sizes / sizes.sum())
        x = kmeans.centroids[cl] + std[cl] * rng.standard_normal((m, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        synth_cos.append(np.sum(x * kmeans.centroids[cl], axis=1) / np.linalg.norm(kmeans.centroids[cl], axis=1))
        writer.append(x)
    writer.close()
    return queries, {"real_vectors": len(real), "centroids": CENTROIDS, "kmeans_s": round(time.perf_counter() - start, 1),
                     "mean_cos_to_centroid_real": round(real_cos, 4),
                     "mean_cos_to_centroid_synthetic": round(float(np.mean(np.concatenate(synth_cos))), 4)}


def build(family: str, vectors: np.ndarray, work: Path, overrides: dict | None = None) -> dict:
    from kb.index import add_vectors, index_params, new_index, save_index

    params = index_params(family, len(vectors), DIM, overrides)
    start = time.perf_counter()
    index = new_index(family, params, DIM, vectors)
    trained = time.perf_counter()
    add_vectors(index, vectors)
    path = work / f"scale-{family}.faiss"
    save_index(index, path)
    return {"params": params, "train_s": round(trained - start, 1), "build_s": round(time.perf_counter() - start, 1),
            "index_bytes": path.stat().st_size, "path": str(path)}


def _rss() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def measure(args) -> dict:
    """In a fresh process: resident bytes of the loaded index, then latency and recall per search setting."""
    from kb.index import VectorIndex, load_index
    from kb.vectors import open_vectors

    import faiss

    queries = np.load(args.queries)
    truth = np.load(args.truth)
    params = json.loads(args.params)
    warm = faiss.IndexFlatIP(DIM)  # library code pages and OpenMP threads are not the index's memory
    warm.add(queries[:10])
    warm.search(queries[:20], 5)
    del warm
    before = _rss()
    vectors = open_vectors(Path(args.vectors), DIM) if args.family == "ivfpq" else None
    index = VectorIndex(load_index(Path(args.index)), args.family, params, vectors)
    after = _rss()
    n = index.ntotal
    result = {"resident_bytes_per_vector": round((after["VmRSS"] - before["VmRSS"]) / n, 2),
              "anon_bytes_per_vector": round((after["RssAnon"] - before["RssAnon"]) / n, 2),
              "disk_index_bytes": os.path.getsize(args.index),
              "disk_refine_bytes": os.path.getsize(args.vectors) if args.family == "ivfpq" else 0,
              "settings": []}
    for setting in (json.loads(args.sweep) if args.sweep else SWEEPS[args.family]):
        searcher = VectorIndex(index.index, args.family, {**params, **setting}, vectors)
        for q in queries[:50]:  # warm-up
            searcher.search(q[None], 10)
        times, rows = [], []
        for q in queries:
            start = time.perf_counter()
            _, r = searcher.search(q[None], 10)
            times.append(time.perf_counter() - start)
            rows.append(r[0])
        recall = np.mean([len(set(r.tolist()) & set(t.tolist())) / 10 for r, t in zip(rows, truth)])
        result["settings"].append({**setting, "recall@10": round(float(recall), 4),
                                   "p50_ms": round(1000 * float(np.percentile(times, 50)), 3),
                                   "p99_ms": round(1000 * float(np.percentile(times, 99)), 3)})
    end = _rss()
    result["rss_after_queries"] = {"anon_bytes_per_vector": round((end["RssAnon"] - before["RssAnon"]) / n, 2),
                                   "file_bytes_per_vector": round((end["RssFile"] - before["RssFile"]) / n, 2)}
    return result


def run(args) -> dict:
    from kb.layout import current_version
    from kb.vectors import canonical, open_vectors

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    medquad = open_vectors(current_version(args.kb) / "vectors.f16", DIM)
    real = np.concatenate([np.asarray(medquad, np.float32), np.asarray(pubmedqa_vectors(work), np.float32)])
    synth_path = work / f"synthetic-{args.vectors}.f16"
    saved = [synth_path, work / "scale-queries.npy", work / "scale-truth.npy"]
    if args.reuse_data and all(p.exists() for p in saved):
        vectors = open_vectors(synth_path, DIM)
        data = {"reused": [str(p) for p in saved]}
    else:
        synth_path.unlink(missing_ok=True)
        start = time.perf_counter()
        queries, data = synthesize(real, args.vectors, synth_path)
        data["synthesize_s"] = round(time.perf_counter() - start, 1)
        vectors = open_vectors(synth_path, DIM)

        import faiss

        start = time.perf_counter()
        exact = faiss.IndexFlatIP(DIM)
        for i in range(0, len(vectors), 100_000):
            exact.add(canonical(vectors[i:i + 100_000]))
        _, truth = exact.search(queries, 10)
        del exact
        data["ground_truth_s"] = round(time.perf_counter() - start, 1)
        np.save(work / "scale-queries.npy", queries)
        np.save(work / "scale-truth.npy", truth)
    eprint("data", data)
    out = {"vectors": args.vectors, "dim": DIM, "queries": QUERIES, "data": data, "families": {}}
    overrides: dict[str, dict] = {}
    for item in args.index_param:
        name, _, value = item.partition("=")
        family, _, key = name.partition(".")
        overrides.setdefault(family, {})[key] = int(value)
    sweeps = dict(item.partition("=")[::2] for item in args.sweep)
    out["overrides"], out["sweeps"] = overrides, {k: json.loads(v) for k, v in sweeps.items()}
    for family in args.families.split(","):
        built = build(family, vectors, work, overrides.get(family))
        eprint(family, "built", built)
        cmd = [sys.executable, __file__, "measure", "--family", family, "--index", built["path"],
               "--vectors", str(synth_path), "--queries", str(work / "scale-queries.npy"),
               "--truth", str(work / "scale-truth.npy"), "--params", json.dumps(built["params"])]
        if family in sweeps:
            cmd += ["--sweep", sweeps[family]]
        measured = json.loads(subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout)
        eprint(family, "measured", measured)
        out["families"][family] = {**{k: v for k, v in built.items() if k != "path"}, **measured}
        if not args.keep:
            os.remove(built["path"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kgv-bench"))
    parser.add_argument("--kb", type=Path, default=Path("/tmp/kgv-bench/medquad-kb"),
                        help="a MiniLM KB whose vectors are the real MedQuAD embeddings (bench/kb.py builds it)")
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the built index files")
    parser.add_argument("--families", default="flat,hnsw,ivfpq")
    parser.add_argument("--reuse-data", action="store_true",
                        help="reuse the synthetic vectors, queries and ground truth already in --work")
    parser.add_argument("--index-param", action="append", default=[], metavar="FAMILY.NAME=VALUE",
                        help="build parameter override, e.g. hnsw.efConstruction=200 (repeatable)")
    parser.add_argument("--sweep", action="append", default=[], metavar="FAMILY=JSON",
                        help='search settings to measure, e.g. hnsw=\'[{"efSearch": 512}]\' (repeatable)')
    m = sub.add_parser("measure")
    for name in ("--family", "--index", "--vectors", "--queries", "--truth", "--params"):
        m.add_argument(name, required=True)
    m.add_argument("--sweep", default=None, help="JSON list of search settings (default: the standard sweep)")
    args = parser.parse_args()
    print(json.dumps(measure(args) if args.command == "measure" else run(args), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
