"""The similarity baseline: P(supported) from embedding cosine; never claims a contradiction."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BASELINE_NAME = "baseline-similarity/1"


class SimilarityPairScorer:
    """P(supported) = sigmoid(slope * (cos(premise, hypothesis) - threshold)); P(contradicted) = 0.

    A real but simple baseline: cosine similarity cannot tell a paraphrase from a
    negation, so it only separates supported from not-enough-info.
    """

    def __init__(self, embedder, threshold: float = 0.62, slope: float = 12.0):
        self.embedder = embedder
        self.threshold = threshold
        self.slope = slope
        # The name is the judge id of provenance and the verdict cache: settings that change verdicts are in it.
        self.name = BASELINE_NAME if (threshold, slope) == (0.62, 12.0) else \
            f"{BASELINE_NAME}(threshold={threshold:g},slope={slope:g})"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        counter = getattr(self.embedder, "count_tokens", None)
        return counter(texts) if counter else [len(t) for t in texts]  # no tokenizer: a character per token

    def premise_budget(self, hypothesis: str) -> int:
        """Premise and hypothesis are embedded apart: the premise has the embedder's whole input."""
        return self.embedder.max_seq_length - 2

    def premise_budgets(self, hypotheses: Sequence[str]) -> list[int]:
        return [self.premise_budget(h) for h in hypotheses]

    def predict_proba(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.zeros((0, 3), dtype=np.float64)
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        position = {t: i for i, t in enumerate(texts)}
        vectors = self.embedder.encode(texts)
        out = np.zeros((len(pairs), 3), dtype=np.float64)
        for row, (premise, hypothesis) in enumerate(pairs):
            cos = float(vectors[position[premise]] @ vectors[position[hypothesis]])
            supported = 1.0 / (1.0 + math.exp(-self.slope * (cos - self.threshold)))
            out[row] = (supported, 0.0, 1.0 - supported)
        return out
