"""The ports every backend implements (selected by name in the registry)."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..pipeline.deadline import Deadline
from ..pipeline.types import JudgeItem, Judgement, KbHit, KbInfo, PrefixScores, RetrievalMode, SplitResult


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings (blocking; call from an executor)."""

    name: str
    weights_hash: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 vectors, shape (len(texts), dim)."""


@runtime_checkable
class KnowledgeBase(Protocol):
    """A searchable set of facts (blocking; call from an executor)."""

    info: KbInfo

    def search(self, queries: Sequence[str], top_k: int, mode: RetrievalMode,
               vectors: np.ndarray | None = None) -> list[list[KbHit]]:
        """Best facts per query, best first (vectors: the queries' embeddings, when already computed)."""


@runtime_checkable
class ClaimSplitter(Protocol):
    """Splits a chain into steps and claims with character offsets."""

    name: str

    def split(self, text: str, question: str = "") -> SplitResult: ...

    def split_steps(self, steps: Sequence[str], question: str = "") -> SplitResult: ...


@runtime_checkable
class PairScorer(Protocol):
    """Embedded NLI-style scorer of (premise, hypothesis) pairs (blocking)."""

    name: str

    def predict_proba(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Shape (n, 3): P(supported), P(contradicted), P(not_enough_info); rows sum to 1."""


@runtime_checkable
class Judge(Protocol):
    """Judges claims against their evidence."""

    name: str
    prompt_version: str

    async def judge(self, items: Sequence[JudgeItem], deadline: Deadline) -> list[Judgement]:
        """One judgement per item, in order. Raises BackendUnavailableError when unreachable."""

    async def ready(self) -> bool:
        """Whether the judge can serve now (cheap; used by health checks)."""


@runtime_checkable
class InfoGainEstimator(Protocol):
    """Scores -log p(target | c_i) for the nested contexts c_0..c_n."""

    name: str
    kind: str  # "lm" | "nli"

    async def score_prefixes(
        self, context0: str, steps: Sequence[str], target: str, deadline: Deadline
    ) -> PrefixScores: ...

    async def paper_perplexities(
        self, context0: str, steps: Sequence[str], target: str, deadline: Deadline
    ) -> list[float | None]:
        """Paper mode: PPL of c_i + " Answer: " + target for i = 0..n (None = did not fit)."""

    async def ready(self) -> bool: ...
