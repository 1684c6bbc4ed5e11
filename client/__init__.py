"""kgverify clients: VerifierClient / AsyncVerifierClient, the batch runner and the `kgverify` CLI."""

from .aio import AsyncVerifierClient
from .errors import VerifierError
from .sync import VerifierClient
from .types import ChainScore, ClaimVerdict, Evidence, Probabilities, SearchHit, SplitResult, StepScore

__all__ = [
    "AsyncVerifierClient", "VerifierClient", "VerifierError", "ChainScore", "ClaimVerdict", "Evidence",
    "Probabilities", "SearchHit", "SplitResult", "StepScore",
]
