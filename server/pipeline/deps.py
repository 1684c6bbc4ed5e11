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
        """One row per text, each distinct text embedded once: context passages repeat (a retriever upstream
        returning the same chunk twice, one passage list sent with every claim), and each of a long passage's up
        to 16 pieces costs a full embedder pass."""
        distinct = list(dict.fromkeys(texts))
        if self.embed is not None:
            vecs = await self.embed(distinct, deadline)
        else:
            vecs = await self.blocking.run(self.embedder().encode, distinct)
        if len(distinct) == len(texts):
            return vecs
        row = {text: i for i, text in enumerate(distinct)}
        return np.asarray(vecs)[[row[text] for text in texts]]
