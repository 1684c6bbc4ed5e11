"""The bundled demo knowledge base, built on first use into the cache directory."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

from .build import BuildOptions, build_kb
from .chunking import ChunkSpec
from .ingest import Document
from .layout import is_kb

log = logging.getLogger("kgverify.kb")

DEMO_FACTS = Path(__file__).parent / "demo" / "facts.jsonl"


def demo_documents(path: Path = DEMO_FACTS) -> list[Document]:
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                docs.append(Document(row["id"], row["text"], row.get("source", ""), row.get("title", "")))
    return docs


def ensure_demo_kb(cache_dir: Path, embedder, progress: bool = False, rebuild: bool = False) -> Path:
    """The demo KB directory for this embedder (flat index + BM25), built once (safe across processes).

    rebuild=True builds a new version even if one exists (a damaged cache: the build embeds anew then)."""
    digest = hashlib.sha256(DEMO_FACTS.read_bytes()).hexdigest()[:12]
    out = Path(cache_dir).expanduser() / f"demo-kb3-{digest}-{embedder.weights_hash}"
    if is_kb(out) and not rebuild:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".demo-kb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild or not is_kb(out):
            log.info("building the demo knowledge base in %s (once per embedder; about 10 s)", out)
            # each demo fact is one short passage: chunks large enough to keep every fact whole
            build_kb(demo_documents(), out, embedder, chunking=ChunkSpec(max_chars=10_000), progress=progress,
                     options=BuildOptions(index="flat"), build_options={"input": "bundled demo facts"})
    return out
