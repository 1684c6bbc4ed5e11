"""The KB manifest: what built it, what it holds, and checksums of every file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import KnowledgeBaseCorruptError
from .layout import MANIFEST_NAME

FORMAT_VERSION = 3
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 64 * 1024
FULL_VERIFY_MAX_BYTES = 2 * 1024 ** 3  # above this, "auto" verification samples instead of hashing all


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_sha256(path: Path) -> str:
    """sha256 of the size and SAMPLE_BLOCKS evenly spread blocks: a fast check of a huge file."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= SAMPLE_BLOCKS * SAMPLE_BLOCK_BYTES:
            digest.update(fh.read())
        else:
            step = (size - SAMPLE_BLOCK_BYTES) // (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                fh.seek(i * step)
                digest.update(fh.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


@dataclass
class FileEntry:
    sha256: str
    bytes: int
    sample_sha256: str

    @classmethod
    def of(cls, path: Path) -> "FileEntry":
        return cls(sha256_file(path), os.path.getsize(path), sample_sha256(path))


@dataclass
class Manifest:
    kb_id: str
    created_at: str
    embedder: str
    embedder_hash: str
    dim: int
    index: dict  # {"family": "flat"|"hnsw"|"ivfpq", "metric": "inner_product", "params": {...}}
    num_facts: int
    num_documents: int
    num_vectors: int = 0  # a fact has one or two vectors (see ChunkSpec.context_chars)
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> FileEntry fields
    chunking: dict = field(default_factory=dict)  # ChunkSpec fields
    bm25: dict | None = None  # tokenizer and scoring parameters, None when built without BM25
    build: dict = field(default_factory=dict)  # what the last build or add did
    history: list = field(default_factory=list)  # one summary per build / add, oldest first
    version: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def file_checksums(self) -> dict[str, str]:
        return {name: entry["sha256"] for name, entry in sorted(self.files.items())}

    def total_bytes(self) -> int:
        return sum(int(entry["bytes"]) for entry in self.files.values())

    def save(self, directory: Path) -> None:
        tmp = Path(directory) / (MANIFEST_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, Path(directory) / MANIFEST_NAME)

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise KnowledgeBaseCorruptError(f"{directory} is not a knowledge base version: {MANIFEST_NAME} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != FORMAT_VERSION:
                raise KnowledgeBaseCorruptError(
                    f"{path} has format version {data.get('format_version')}; this kgverify reads "
                    f"{FORMAT_VERSION}: rebuild the KB with `kgverify kb build`")
            return cls(**data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise KnowledgeBaseCorruptError(f"{path} is not a valid manifest: {exc}") from exc

    def verify_files(self, directory: Path, mode: str = "full") -> str:
        """Raises KnowledgeBaseCorruptError on a missing, resized or altered file; returns the mode used.

        "full" hashes every byte; "sample" checks sizes and sampled blocks (fast for huge KBs);
        "auto" is full up to FULL_VERIFY_MAX_BYTES in total, sampled above.
        """
        if mode == "auto":
            mode = "full" if self.total_bytes() <= FULL_VERIFY_MAX_BYTES else "sample"
        if mode not in ("full", "sample"):
            raise ValueError(f"unknown verification mode {mode!r}")
        for name, entry in sorted(self.files.items()):
            path = Path(directory) / name
            if not path.is_file():
                raise KnowledgeBaseCorruptError(f"knowledge base file {path} is missing")
            size = os.path.getsize(path)
            if size != entry["bytes"]:
                raise KnowledgeBaseCorruptError(
                    f"knowledge base file {path} has {size} bytes, the manifest says {entry['bytes']} "
                    "(truncated or modified); rebuild the KB")
            actual = sha256_file(path) if mode == "full" else sample_sha256(path)
            if actual != entry["sha256" if mode == "full" else "sample_sha256"]:
                raise KnowledgeBaseCorruptError(
                    f"knowledge base file {path} fails its checksum (corrupted or modified); rebuild the KB")
        return mode
