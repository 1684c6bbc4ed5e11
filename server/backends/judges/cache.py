"""The verdict cache: a bounded LRU of judgements keyed by claim, evidence, judge, prompt version and KB."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import unicodedata
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.types import Evidence, JudgeItem, Judgement, Tier, Verdict

CacheKey = tuple[Hashable, ...]


def normalize_claim(text: str) -> str:
    """Claims equal up to Unicode form and whitespace share a verdict (case is kept: it can change meaning)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _evidence_key(evidence: Evidence) -> tuple[str, str, str]:
    # Context passage ids are the caller's ("context:0" in every request): what the judge reads is part of the key.
    seen = "\x1f".join((evidence.text, evidence.title, evidence.source)).encode("utf-8")
    return evidence.origin.value, evidence.fact_id, hashlib.blake2b(seen, digest_size=12).hexdigest()


def cache_key(item: JudgeItem, judge_name: str, prompt_version: str, kb_id: str) -> CacheKey:
    return (normalize_claim(item.claim), tuple(_evidence_key(e) for e in item.evidence), judge_name,
            prompt_version, kb_id)


def cacheable(judgement: Judgement) -> bool:
    """Errors and degraded verdicts are not kept: the next request should get the real answer."""
    return judgement.verdict is not Verdict.ERROR and judgement.tier is not Tier.DEGRADED


class VerdictCache:
    """Bounded LRU, safe across threads and tasks; hits, misses and evictions are counted for metrics."""

    def __init__(self, max_entries: int):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Judgement] = OrderedDict()
        self._lock = threading.Lock()  # held only for dict operations, never across an await
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        # Metrics hook: called with (hits, misses) after each batch of lookups, e.g. to feed a Prometheus counter.
        self.on_lookups: Callable[[int, int], None] | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: CacheKey) -> Judgement | None:
        with self._lock:
            judgement = self._entries.get(key)
            if judgement is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return dataclasses.replace(judgement, cached=True, llm_calls=0)

    def put(self, key: CacheKey, judgement: Judgement) -> None:
        if not cacheable(judgement):
            return
        stored = dataclasses.replace(judgement, cached=False)
        with self._lock:
            self._entries[key] = stored
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, int]:
        """Counters for a metrics exporter (monotonic except size)."""
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "size": len(self._entries), "max_entries": self.max_entries}

    async def judge_through(self, judge, items: Sequence[JudgeItem], deadline: Deadline,
                            kb_id: str = "") -> list[Judgement]:
        """judge.judge(items) with cached verdicts reused (`cached: true`) and new ones stored."""
        keys = [cache_key(item, judge.name, judge.prompt_version, kb_id) for item in items]
        out: list[Judgement | None] = [self.get(key) for key in keys]
        missing = [i for i, judgement in enumerate(out) if judgement is None]
        if self.on_lookups is not None:
            self.on_lookups(len(items) - len(missing), len(missing))
        if missing:
            fresh = await judge.judge([items[i] for i in missing], deadline)
            for i, judgement in zip(missing, fresh):
                out[i] = judgement
                self.put(keys[i], judgement)
        return out  # type: ignore[return-value]
