"""Backends by name. app.py builds them through these tables; new backends register here.

Factories are synchronous (they may load models) and are called off the event loop.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import Settings
from ..pipeline.errors import BackendNotConfiguredError, FailedPreconditionError
from ..pipeline.runtime import Blocking

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_NLI_MODEL = REPO_ROOT / "models" / "nli-judge"


def require_device(device: str, setting: str) -> None:
    """A CUDA device torch cannot see fails the model's load with the setting's name, not a torch traceback
    (and not as BackendNotConfiguredError, which would let the judge fall back to the similarity baseline)."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise FailedPreconditionError(f"{setting}={device}, but torch {torch.__version__} sees no CUDA device")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise FailedPreconditionError(f"{setting}={device}, but torch sees {count} CUDA device(s)")


@dataclass
class BackendContext:
    """What factories may use: settings, the executor, and shared lazily-built resources."""

    settings: Settings
    blocking: Blocking
    _cache: dict[str, Any] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """One instance per key for the whole server (models are loaded once)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def batcher(self, key: str, run: Callable, length: Callable | None = None):
        """The micro-batcher of one loaded model: every request using that model goes through it."""
        from .. import metrics
        from ..batching import MicroBatcher, text_length

        cfg = self.settings.batching
        return self.shared(f"batcher:{key}", lambda: MicroBatcher(
            key, run, self.blocking, enabled=cfg.enabled, max_batch_size=cfg.max_batch_size,
            max_wait_ms=cfg.max_wait_ms, length=length or text_length, on_batch=metrics.record_batch,
            on_out_of_memory=metrics.record_out_of_memory, on_failure=metrics.record_batch_failure))

    def pair_batcher(self, scorer):
        """The batcher of a pair scorer (NLI model or similarity baseline), shared by the judge and the estimator.

        A scorer whose rows depend on the other rows of its call never mixes requests: a verdict must not
        depend on other callers' traffic (the int8 NLI model avoids this by scoring one pair per pass).
        """
        batcher = self.batcher(scorer.name, scorer.predict_proba)
        batcher.enabled = batcher.enabled and getattr(scorer, "batch_invariant", True)
        return batcher

    def embedding_batcher(self):
        """The batcher of the query embedder (claims and context passages embedded at request time)."""
        return self.batcher("embedder", self.embedder().encode)

    def embedder(self):
        from kb.embedder import SentenceTransformerEmbedder

        cfg = self.settings.embedder

        def build():
            require_device(cfg.device, "KGV_EMBEDDER__DEVICE")
            return SentenceTransformerEmbedder(cfg.model, cfg.device, cfg.batch_size)

        return self.shared("embedder", build)

    def nli_model(self):
        """The trained embedded NLI model (BackendNotConfiguredError when it is not available)."""
        path = self.settings.judge.nli_model_path or SHIPPED_NLI_MODEL

        def build():
            try:
                from .judges.nli_model import NliModel
            except ImportError as exc:
                raise BackendNotConfiguredError(f"the embedded NLI judge is not available: {exc}") from exc
            if not Path(path).is_dir():
                raise BackendNotConfiguredError(f"the embedded NLI judge model is missing: {path}")
            cfg = self.settings.judge
            require_device(cfg.nli_device, "KGV_JUDGE__NLI_DEVICE")
            return NliModel.load(str(path), device=cfg.nli_device, quantize=cfg.nli_int8, dtype=cfg.nli_dtype)

        return self.shared("nli_model", build)

    def embedded_scorer(self):
        """The best local pair scorer: the trained NLI model, else the similarity baseline."""
        try:
            return self.nli_model()
        except BackendNotConfiguredError:
            return self.baseline_scorer()

    def baseline_scorer(self):
        from .judges.similarity import SimilarityPairScorer

        threshold = self.settings.judge.support_threshold
        return self.shared("baseline_scorer", lambda: SimilarityPairScorer(self.embedder(), threshold))


def _with_cache(ctx: BackendContext, judge):
    """Every judge shares the server's one verdict cache (keys name the judge, so they never mix)."""
    size = ctx.settings.judge.cache_size
    if size:
        from .judges.cache import VerdictCache

        judge.verdict_cache = ctx.shared("verdict_cache", lambda: VerdictCache(size))
    return judge


def _embedded(ctx: BackendContext, scorer):
    from .judges.aggregation import AggregationPolicy
    from .judges.embedded import EmbeddedJudge

    cfg = ctx.settings.judge
    # Enough windows to read the longest passage a request may hold to its end: side by side, two consecutive
    # windows of whole sentences hold more than window_chars (else they would be one), so n windows read more
    # than (n - 1) * window_chars / 2 characters.
    max_windows = max(AggregationPolicy.max_windows,
                      math.ceil(2 * ctx.settings.limits.max_passage_chars / cfg.window_chars) + 1)
    policy = AggregationPolicy(window_chars=cfg.window_chars, max_windows=max_windows,
                               min_decisive=cfg.min_decisive_probability)
    return EmbeddedJudge(scorer, ctx.blocking, policy, batcher=ctx.pair_batcher(scorer))


def _baseline_judge(ctx: BackendContext):
    return _with_cache(ctx, _embedded(ctx, ctx.baseline_scorer()))


def _nli_judge(ctx: BackendContext):
    return _with_cache(ctx, _embedded(ctx, ctx.nli_model()))


def _llm_judge(ctx: BackendContext):
    from .judges.vllm_judge import judge_from_settings

    return ctx.shared("judge:vllm", lambda: judge_from_settings(ctx.settings.judge))


def _vllm_judge(ctx: BackendContext):
    return _with_cache(ctx, _llm_judge(ctx))


def _cascade_judge(ctx: BackendContext):
    from .judges.cascade import CascadeJudge

    embedded = _embedded(ctx, ctx.embedded_scorer())
    return _with_cache(ctx, CascadeJudge(embedded, _llm_judge(ctx), ctx.settings.judge.cascade_threshold))


def _nli_estimator(ctx: BackendContext):
    from .lm.nli_estimator import NliEstimator

    scorer = ctx.embedded_scorer()
    return NliEstimator(scorer, ctx.blocking, ctx.settings.lm.nli_max_chars, batcher=ctx.pair_batcher(scorer))


def _transformers_estimator(ctx: BackendContext):
    from .lm.transformers_lm import estimator_from_settings

    return ctx.shared("lm:transformers", lambda: estimator_from_settings(ctx.settings.lm, ctx.blocking,
                                                                                  ctx.settings.batching))


def _vllm_estimator(ctx: BackendContext):
    from .lm.vllm_lm import estimator_from_settings

    return ctx.shared("lm:vllm", lambda: estimator_from_settings(ctx.settings.lm, ctx.blocking))


def _rule_splitter(ctx: BackendContext):
    from ..pipeline.splitter import RuleSplitter

    return RuleSplitter()


def _llm_splitter(ctx: BackendContext):
    from .splitters.llm_decomposer import decomposer_from_settings

    return decomposer_from_settings(ctx.settings, ctx.blocking)


JUDGES: dict[str, Callable[[BackendContext], Any]] = {
    "baseline": _baseline_judge,
    "nli": _nli_judge,
    "vllm": _vllm_judge,
    "cascade": _cascade_judge,
}
ESTIMATORS: dict[str, Callable[[BackendContext], Any]] = {
    "nli": _nli_estimator,
    "transformers": _transformers_estimator,
    "vllm": _vllm_estimator,
}
SPLITTERS: dict[str, Callable[[BackendContext], Any]] = {
    "rules": _rule_splitter,
    "llm": _llm_splitter,
}
LM_BACKENDS = ("transformers", "vllm")


def build(table: dict[str, Callable], kind: str, name: str, ctx: BackendContext):
    factory = table.get(name)
    if factory is None:
        raise BackendNotConfiguredError(
            f"{kind} {name!r} is not available in this server (available: {', '.join(sorted(table))})"
        )
    return factory(ctx)
