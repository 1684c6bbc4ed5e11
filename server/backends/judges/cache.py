"""The verdict cache: a bounded LRU of judgements keyed by claim, evidence, judge, prompt version and KB."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import threading
from collections import OrderedDict
from typing import Callable, Hashable, Sequence

from ...pipeline.deadline import Deadline
from ...pipeline.types import Evidence, JudgeItem, Judgement, Tier, Verdict
from .cascade import llm_tier_deadline
from .prompts import prompt_claim

CacheKey = tuple[Hashable, ...]


def normalize_claim(text: str) -> str:
    """Claims equal up to canonical Unicode form (NFC) and whitespace share a verdict.

    Only differences that do not change what the claim says: case is kept ("CO" is not "Co"), and so are
    compatibility characters (NFKC would make "10⁵ units" the claim "105 units", and "x²" "x2"). The LLM judge's
    prompt shows the claim in this form, so claims sharing a verdict read alike to it."""
    return prompt_claim(text)


def _evidence_key(evidence: Evidence) -> tuple[str, str, str]:
    # Context passage ids are the caller's ("context:0" in every request): what the judge reads is part of the key.
    # Each part with its length: joined with a separator alone, a passage holding it matched another ("a\x1f" with
    # no title was "a" titled "\x1f").
    seen = "".join(f"{len(part)}:{part}" for part in (evidence.text, evidence.title, evidence.source)).encode("utf-8")
    return evidence.origin.value, evidence.fact_id, hashlib.blake2b(seen, digest_size=12).hexdigest()


def cache_key(item: JudgeItem, judge_name: str, prompt_version: str, kb_id: str) -> CacheKey:
    return (normalize_claim(item.claim), tuple(_evidence_key(e) for e in item.evidence), judge_name,
            prompt_version, kb_id)


async def judge_identity(judge, deadline: Deadline) -> str | None:
    """What the cache keys a judge by: its name, or for a judge on vLLM also the model serving that name (None
    while that is unknown)."""
    identity = getattr(judge, "cache_identity", None)
    return judge.name if identity is None else await identity(deadline)


def cacheable(judgement: Judgement) -> bool:
    """Errors and degraded verdicts are not kept: the next request should get the real answer."""
    return judgement.verdict is not Verdict.ERROR and judgement.tier is not Tier.DEGRADED


def _as_hit(judgement: Judgement) -> Judgement:
    """A verdict served without judging: marked cached, costing no LLM call."""
    return dataclasses.replace(judgement, cached=True, llm_calls=0)


def _with_own_evidence(judgement: Judgement, item: JudgeItem) -> Judgement:
    """The verdict with this request's evidence objects, in the verdict's order (deciding evidence first).

    The key holds what the judge read (ids, text, title, source), not the retrieval scores: a verdict stored by a
    hybrid search is a hit for a dense one that found the same facts, and must show the dense scores."""
    if judgement.evidence is None or not item.evidence:
        return judgement
    own: dict = {}
    for evidence in item.evidence:
        own.setdefault(_evidence_key(evidence), evidence)
    shown = tuple(own.get(_evidence_key(e), e) for e in judgement.evidence)
    return judgement if shown == judgement.evidence else dataclasses.replace(judgement, evidence=shown)


class VerdictCache:
    """Bounded LRU, safe across threads and tasks; hits, misses and evictions are counted for metrics."""

    def __init__(self, max_entries: int):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        # key -> (verdict, its evidence as positions in the key's evidence, or None when the verdict holds its own)
        self._entries: OrderedDict[CacheKey, tuple[Judgement, tuple[int, ...] | None]] = OrderedDict()
        self._lock = threading.Lock()  # held only for dict operations, never across an await
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        # Metrics hook: called with (hits, misses) after each batch of lookups, e.g. to feed a Prometheus counter.
        self.on_lookups: Callable[[int, int], None] | None = None
        # Keys being judged right now -> the judging request's future (single flight; guarded by _lock).
        self._inflight: dict[CacheKey, asyncio.Future] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: CacheKey, item: JudgeItem | None = None) -> Judgement | None:
        """The stored verdict as a hit; its evidence is `item`'s (the claim looked up) in the verdict's order, or
        None without `item` (the cache keeps the order, not the evidence)."""
        judgement = self._peek(key, item)
        self._count(judgement is not None, judgement is None)
        return judgement

    def _peek(self, key: CacheKey, item: JudgeItem | None = None) -> Judgement | None:
        """The stored verdict as a hit (`cached`, no LLM calls), counting nothing."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        judgement, order = entry
        if order is not None:
            shown = tuple(item.evidence[i] for i in order) if item is not None else None
            judgement = dataclasses.replace(judgement, evidence=shown)
        return _as_hit(judgement)

    def _count(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses

    def put(self, key: CacheKey, judgement: Judgement) -> None:
        if not cacheable(judgement):
            return
        stored, order = dataclasses.replace(judgement, cached=False), None
        if judgement.evidence:
            # The entry keeps the verdict's evidence order, not the evidence: the key names every item (the hit's
            # request brings its own copies), and the texts of top_k long passages would make each entry heavy.
            positions: dict = {}
            for i, evidence_key in enumerate(key[1] if len(key) > 1 and isinstance(key[1], tuple) else ()):
                positions.setdefault(evidence_key, i)
            order = tuple(positions.get(_evidence_key(e), -1) for e in judgement.evidence)
            if -1 in order:  # evidence the key does not name: kept as it is
                order = None
            else:
                stored = dataclasses.replace(stored, evidence=None)
        with self._lock:
            self._entries[key] = (stored, order)
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
        """judge.judge(items) with cached verdicts reused (`cached: true`) and new ones stored.

        Single flight: a key repeated within `items`, or being judged right now for another request on this
        event loop, is judged once; the others get that verdict as a hit (`cached: true`, no LLM calls). If
        that judging fails, is cancelled, gives an uncacheable verdict or outlasts this deadline (less the time
        kept to judge here), the waiting items are judged here after all."""
        loop = asyncio.get_running_loop()
        identity = await judge_identity(judge, deadline)
        if identity is None:  # which model would judge is unknown right now: its verdicts are not kept or reused
            self._count(0, len(items))  # (lookups that found nothing: a cache off for now shows 0% hits, not idle)
            if self.on_lookups is not None:
                self.on_lookups(0, len(items))
            return await judge.judge(items, deadline)
        keys = [cache_key(item, identity, judge.prompt_version, kb_id) for item in items]
        out: list[Judgement | None] = [self._peek(key, item) for key, item in zip(keys, items)]
        own: dict[CacheKey, list[int]] = {}  # judged by this call: key -> its positions in items
        waiting: dict[CacheKey, tuple[asyncio.Future, list[int]]] = {}  # judged by another call right now
        with self._lock:
            for i, judgement in enumerate(out):
                if judgement is not None:
                    continue
                key = keys[i]
                other = self._inflight.get(key)
                if key in own:
                    own[key].append(i)
                elif key in waiting:
                    waiting[key][1].append(i)
                elif other is not None and other.get_loop() is loop:
                    waiting[key] = (other, [i])
                else:
                    own[key] = [i]
            flights = {key: loop.create_future() for key in own}
            self._inflight.update(flights)
        try:
            await self._judge_own(judge, items, deadline, own, flights, out)
            if waiting:
                await self._await_others(judge, items, deadline, keys, waiting, out)
        finally:  # every lookup counts, also when judging fails: a hit is a verdict served without judging
            hits = sum(1 for judgement in out if judgement is not None and judgement.cached)
            self._count(hits, len(items) - hits)
            if self.on_lookups is not None:
                self.on_lookups(hits, len(items) - hits)
        return [_with_own_evidence(judgement, item) for judgement, item in zip(out, items)]

    async def _judge_own(self, judge, items, deadline: Deadline, own: dict, flights: dict, out: list) -> None:
        """Judges the keys this call owns, hands each verdict to its waiters, and always clears its flights."""
        try:
            if own:
                fresh = await judge.judge([items[positions[0]] for positions in own.values()], deadline)
                for (key, positions), judgement in zip(own.items(), fresh):
                    self.put(key, judgement)
                    flights[key].set_result(judgement)
                    self._fill(out, positions, judgement, first_is_fresh=True)
        finally:
            with self._lock:
                for key, flight in flights.items():
                    if self._inflight.get(key) is flight:
                        del self._inflight[key]
            for flight in flights.values():
                if not flight.done():
                    flight.cancel()  # waiters judge on their own

    async def _await_others(self, judge, items, deadline: Deadline, keys: list, waiting: dict, out: list) -> None:
        """Takes the verdicts other calls are judging; judges here what they could not share in time."""
        # Waiting stops with time left to judge here (the reserve the cascade keeps for its degraded verdicts): a
        # caller with a shorter deadline than the judging one would otherwise wait it out and fail DEADLINE_EXCEEDED.
        await asyncio.wait([flight for flight, _ in waiting.values()], timeout=llm_tier_deadline(deadline).remaining())
        again: list[list[int]] = []
        for flight, positions in waiting.values():
            judgement = flight.result() if flight.done() and not flight.cancelled() else None
            if judgement is not None and cacheable(judgement):
                self._fill(out, positions, judgement, first_is_fresh=False)
            else:
                again.append(positions)
        if again:
            fresh = await judge.judge([items[positions[0]] for positions in again], deadline)
            for positions, judgement in zip(again, fresh):
                self.put(keys[positions[0]], judgement)
                self._fill(out, positions, judgement, first_is_fresh=True)

    @staticmethod
    def _fill(out: list, positions: list[int], judgement: Judgement, first_is_fresh: bool) -> None:
        """The verdict at every position of one key: the first as judged here (when it was), the others as hits
        (an uncacheable verdict, e.g. ERROR, is repeated as it is, never marked cached; its calls count once)."""
        for n, i in enumerate(positions):
            if n == 0 and first_is_fresh:
                out[i] = judgement
            elif cacheable(judgement):
                out[i] = _as_hit(judgement)
            else:
                out[i] = dataclasses.replace(judgement, llm_calls=0)
