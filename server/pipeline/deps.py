"""What the pipeline needs from the composition root (ports, defaults, limits)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

import numpy as np

from .deadline import Deadline
from .runtime import Blocking
from .types import Provenance, RetrievalMode
from .validation import Limits

if TYPE_CHECKING:
    from ..backends.ports import ClaimSplitter, Embedder, InfoGainEstimator, Judge, KnowledgeBase


@dataclass
class PipelineDeps:
    limits: Limits
    blocking: Blocking
    splitter: Callable[[str | None], Awaitable["ClaimSplitter"]]
    judge: Callable[[str | None], Awaitable["Judge"]]
    estimator: Callable[[str | None], Awaitable["InfoGainEstimator"]]
    knowledge_base: Callable[[], "KnowledgeBase | None"]
    embedder: Callable[[], "Embedder"]
    default_top_k: int = 5
    default_retrieval_mode: RetrievalMode = RetrievalMode.DENSE
    provenance: Provenance = Provenance()
    # Request-time embeddings through the embedder's micro-batcher; None = embedder().encode on the executor.
    embed: Callable[[Sequence[str], Deadline], Awaitable[np.ndarray]] | None = None

    async def embed_texts(self, texts: Sequence[str], deadline: Deadline) -> np.ndarray:
        if self.embed is not None:
            return await self.embed(texts, deadline)
        return await self.blocking.run(self.embedder().encode, list(texts))
