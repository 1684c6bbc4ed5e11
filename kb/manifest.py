"""The KB manifest: what built it, what it holds, checksums of every file."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import KnowledgeBaseCorruptError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    kb_id: str
    created_at: str
    embedder: str
    embedder_hash: str
    dim: int
    index: dict  # {"family": "flat", "metric": "inner_product", "params": {...}}
    num_facts: int
    num_documents: int
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    build: dict = field(default_factory=dict)  # chunking and input options
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def checksum(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def save(self, directory: Path) -> None:
        tmp = directory / (MANIFEST_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / MANIFEST_NAME)

    @classmethod
    def load(cls, directory: Path) -> "Manifest":
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise KnowledgeBaseCorruptError(f"{directory} is not a knowledge base: {MANIFEST_NAME} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls(**data)
        except (ValueError, TypeError) as exc:
            raise KnowledgeBaseCorruptError(f"{path} is not a valid manifest: {exc}") from exc
        if manifest.format_version != FORMAT_VERSION:
            raise KnowledgeBaseCorruptError(
                f"{path} has format version {manifest.format_version}; this kgverify reads {FORMAT_VERSION}"
            )
        return manifest

    def verify_files(self, directory: Path) -> None:
        """Raises KnowledgeBaseCorruptError when a file is missing or fails its checksum."""
        for name, expected in sorted(self.files.items()):
            path = Path(directory) / name
            if not path.is_file():
                raise KnowledgeBaseCorruptError(f"knowledge base file {path} is missing")
            if sha256_file(path) != expected:
                raise KnowledgeBaseCorruptError(
                    f"knowledge base file {path} fails its checksum (corrupted or modified); rebuild the KB"
                )
