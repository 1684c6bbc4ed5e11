"""A loaded knowledge base: FAISS index + fact store, verified against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from server.pipeline.errors import FailedPreconditionError
from server.pipeline.types import KbHit, KbInfo, RetrievalMode

from .errors import KnowledgeBaseCorruptError, KnowledgeBaseMismatchError
from .index import INDEX_NAME, load_index
from .manifest import Manifest
from .store import STORE_NAME, FactStore


class FaissKnowledgeBase:
    """Dense retrieval over a KB directory built by `kgverify kb build`."""

    def __init__(self, path: Path, manifest: Manifest, index, store: FactStore, embedder):
        self.path = Path(path)
        self.manifest = manifest
        self._index = index
        self._store = store
        self._embedder = embedder
        self.info = KbInfo(
            kb_id=manifest.kb_id,
            path=str(self.path),
            created_at=manifest.created_at,
            embedder=manifest.embedder,
            embedder_hash=manifest.embedder_hash,
            dim=manifest.dim,
            index_family=manifest.index.get("family", "flat"),
            metric=manifest.index.get("metric", "inner_product"),
            index_params={k: str(v) for k, v in manifest.index.get("params", {}).items()},
            num_facts=manifest.num_facts,
            num_documents=manifest.num_documents,
            checksum=manifest.checksum(),
            file_checksums=dict(manifest.files),
            modes=(RetrievalMode.DENSE,),
        )

    @classmethod
    def load(cls, path: Path, embedder, verify: bool = True) -> "FaissKnowledgeBase":
        path = Path(path)
        manifest = Manifest.load(path)
        if manifest.embedder_hash != embedder.weights_hash or manifest.dim != embedder.dim:
            raise KnowledgeBaseMismatchError(
                f"knowledge base {path} was built with embedder {manifest.embedder!r} "
                f"(weights {manifest.embedder_hash}, dim {manifest.dim}) but the server is configured with "
                f"{embedder.name!r} (weights {embedder.weights_hash}, dim {embedder.dim}); "
                "rebuild the KB or configure the matching embedder (KGV_EMBEDDER__MODEL)"
            )
        if verify:
            manifest.verify_files(path)
        try:
            index = load_index(path / INDEX_NAME)
            store = FactStore(path / STORE_NAME)
        except Exception as exc:  # faiss raises RuntimeError on damaged files
            raise KnowledgeBaseCorruptError(f"knowledge base {path} cannot be read: {exc}") from exc
        if index.ntotal != manifest.num_facts or index.d != manifest.dim:
            raise KnowledgeBaseCorruptError(
                f"knowledge base {path}: index holds {index.ntotal} vectors of dim {index.d}, "
                f"manifest says {manifest.num_facts} of dim {manifest.dim}"
            )
        return cls(path, manifest, index, store, embedder)

    def search(self, queries: Sequence[str], top_k: int, mode: RetrievalMode) -> list[list[KbHit]]:
        if mode is not RetrievalMode.DENSE:
            raise FailedPreconditionError(
                f"knowledge base {self.info.kb_id} supports retrieval modes "
                f"{[m.value for m in self.info.modes]}, not {mode.value!r}",
                reason="RETRIEVAL_MODE_UNAVAILABLE",
            )
        if not queries:
            return []
        k = min(top_k, self._index.ntotal)
        if k <= 0:
            return [[] for _ in queries]
        scores, rows = self._index.search(self._embedder.encode(queries), k)
        out = []
        for score_row, id_row in zip(scores, rows):
            facts = self._store.get(id_row)
            out.append([
                KbHit(f.fact_id, f.text, f.source, f.title, float(s))
                for f, s in zip(facts, score_row) if f is not None
            ])
        return out

    def close(self) -> None:
        self._store.close()
