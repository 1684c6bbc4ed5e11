"""Building a knowledge base directory atomically (temp dir + rename)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from .index import INDEX_NAME, build_flat, save_index
from .ingest import Document, chunk_documents
from .manifest import Manifest, sha256_file
from .store import STORE_NAME, Fact, write_store


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp_dir: Path, out_dir: Path) -> None:
    """Moves a finished build into place; a previous KB there is replaced whole."""
    out_dir = Path(out_dir)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    _fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_kb(
    docs: Iterable[Document],
    out_dir: Path,
    embedder,
    *,
    chunk_chars: int = 500,
    build_options: dict | None = None,
    progress: bool = True,
) -> Manifest:
    """Chunks, embeds and indexes documents into out_dir; nothing is half-written on failure."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp_dir.mkdir()
    try:
        docs = list(docs)
        facts: list[Fact] = list(chunk_documents(docs, chunk_chars))
        texts = [f.text for f in facts]
        vectors = np.zeros((0, embedder.dim), dtype=np.float32)
        batch = max(256, embedder.batch_size)
        parts = []
        with tqdm(total=len(texts), desc="embedding facts", unit="fact", disable=not progress) as bar:
            for i in range(0, len(texts), batch):
                parts.append(embedder.encode(texts[i:i + batch]))
                bar.update(len(texts[i:i + batch]))
        if parts:
            vectors = np.concatenate(parts)
        save_index(build_flat(vectors), tmp_dir / INDEX_NAME)
        write_store(tmp_dir / STORE_NAME, facts)
        files = {name: sha256_file(tmp_dir / name) for name in (INDEX_NAME, STORE_NAME)}
        kb_id = "kb-" + hashlib.sha256(
            "".join(f"{k}={v};" for k, v in sorted(files.items())).encode() + embedder.weights_hash.encode()
        ).hexdigest()[:16]
        manifest = Manifest(
            kb_id=kb_id,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            embedder=embedder.name,
            embedder_hash=embedder.weights_hash,
            dim=embedder.dim,
            index={"family": "flat", "metric": "inner_product", "params": {}},
            num_facts=len(facts),
            num_documents=len({d.doc_id for d in docs}),
            files=files,
            build={"chunk_chars": chunk_chars, **(build_options or {})},
        )
        manifest.save(tmp_dir)
        for name in files:
            with open(tmp_dir / name, "rb") as fh:
                os.fsync(fh.fileno())
        publish(tmp_dir, out_dir)
        return manifest
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
