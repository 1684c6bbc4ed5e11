"""`kgverify batch`: score a dataset over the streaming RPC into a resumable JSONL journal."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import requests
from .aio import AsyncVerifierClient, backoff_s
from .batch_io import RowError, export_journal, is_error_record, read_rows
from .errors import VerifierError

log = logging.getLogger(__name__)
RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
NOT_RETRIED = {"RESPONSE_TOO_LARGE"}  # the same row would get it again
PASSTHROUGH = ("group", "question_id")
RECORD_KEYS = ("knowledge_index", "knowledge_index_paper", "coverage", "counts", "error_steps", "first_error_step",
               "info_gain", "info_gain_total", "info_gain_paper", "target", "estimator", "steps", "llm_calls",
               "provenance")


class BatchError(RuntimeError):
    """The run itself failed (as opposed to individual rows)."""


@dataclass
class BatchOptions:
    input: Path
    output: Path
    servers: list[str] = field(default_factory=list)
    concurrency: int = 8
    metrics: tuple[str, ...] = ("ki", "infogain")
    keep_order: bool = False
    max_attempts: int = 6
    stream_failures: int = 5
    progress: bool = True
    knowledge: dict[str, Any] = field(default_factory=dict)  # top_k, judge, retrieval_mode, ...
    info_gain: dict[str, Any] = field(default_factory=dict)  # estimator, mode, units, window, per_token
    input_format: str | None = None  # jsonl | csv | parquet; None = from the file name
    export: list[Path] = field(default_factory=list)  # .csv / .parquet files written from the journal at the end
    fsync_interval_s: float = 1.0  # bounds what a power cut can lose; a killed process loses nothing written
    credentials: Any = None  # grpc.ChannelCredentials for TLS / mTLS servers
    metadata: tuple = ()  # e.g. (("authorization", "Bearer ..."),)
    retry_errors: bool = False  # score again the rows whose last journal record is an error


@dataclass
class Item:
    position: int
    id: str
    request: Any
    extra: dict[str, Any]
    attempts: int = 0


@dataclass
class BatchSummary:
    total: int = 0
    skipped: int = 0
    retried: int = 0  # rows whose error record is being replaced (retry_errors)
    written: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def channel_security(ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                     token_file: Path | None = None) -> tuple[Any, tuple]:
    """(TLS credentials or None, call metadata) for servers that require TLS, mTLS or a bearer token."""
    credentials = None
    if ca or cert or key:
        import grpc

        if bool(cert) != bool(key):
            raise BatchError("give both --tls-cert and --tls-key (mTLS) or neither")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None)
    metadata: tuple = ()
    if token_file:
        token = Path(token_file).read_text(encoding="utf-8").strip()
        if not token:
            raise BatchError(f"{token_file} holds no token")
        metadata = (("authorization", f"Bearer {token}"),)
    return credentials, metadata


def error_record(item_id: str, error: VerifierError, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    record = {"id": item_id, "status": error.to_status(), **{k: None for k in RECORD_KEYS}}
    record["steps"], record["llm_calls"], record["provenance"] = [], 0, {}
    record.update(extra or {})
    return record


class Journal:
    """Append-only JSONL output: each record is one write of a whole line, so a kill never tears a row.

    A write reaches the OS at once (a kill -9 loses nothing written); fsync runs at most
    every fsync_interval_s and at close, which bounds what a power cut can lose. One run
    at a time holds the journal (an advisory lock, released by the OS if the run dies).
    """

    def __init__(self, path: Path, fsync_interval_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise BatchError(f"another batch run is writing {self.path}") from None
        self.done, self.failed = self._recover()
        self.fsync_interval_s = fsync_interval_s
        self._synced_at = time.monotonic()

    def _recover(self) -> tuple[set[str], set[str]]:
        """(ids whose last record is a result, ids whose last record is an error); drops a torn last line."""
        if not self.path.exists():
            return set(), set()
        size = os.path.getsize(self.path)
        keep = _end_of_last_line(self.path, size)
        if keep < size:
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
        done: set[str] = set()
        failed: set[str] = set()
        with open(self.path, "rb") as fh:  # line by line: a journal of millions of rows is never held whole
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("id"), str):
                    self._mark(record, done, failed)
        return done, failed

    @staticmethod
    def _mark(record: dict[str, Any], done: set[str], failed: set[str]) -> None:
        """A later record of an id replaces an earlier one (see batch_io.journal_records)."""
        item_id = record["id"]
        if is_error_record(record):
            done.discard(item_id)
            failed.add(item_id)
        else:
            failed.discard(item_id)
            done.add(item_id)

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()
        os.write(self._fd, line)
        self._mark(record, self.done, self.failed)
        if time.monotonic() - self._synced_at >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._synced_at = time.monotonic()

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)  # releases the lock


def _end_of_last_line(path: Path, size: int, chunk: int = 1 << 16) -> int:
    """The offset just past the file's last newline (0 if it has none), read backwards chunk by chunk."""
    with open(path, "rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            fh.seek(start)
            at = fh.read(end - start).rfind(b"\n")
            if at >= 0:
                return start + at + 1
            end = start
    return 0


def plan_items(opts: BatchOptions, journal: Journal, summary: BatchSummary) -> list[tuple[int, Item | dict]]:
    """(input position, item to send or error record of a row that is bad before any call), in input order."""
    planned: list[tuple[int, Item | dict]] = []
    seen: set[str] = set()
    for position, (label, row) in enumerate(read_rows(opts.input, opts.input_format)):
        summary.total += 1
        extra = {k: row[k] for k in PASSTHROUGH if isinstance(row, dict) and k in row}
        raw_id = row.get("id") if isinstance(row, dict) else getattr(row, "row_id", None)
        item_id = str(raw_id) if isinstance(raw_id, (str, int)) and str(raw_id) else f"#{label}"
        if item_id in journal.done or (item_id in journal.failed and not opts.retry_errors):
            summary.skipped += 1
            continue
        if item_id in journal.failed:
            summary.retried += 1
        problem = None
        if isinstance(row, RowError):
            problem = VerifierError("INVALID_ARGUMENT", row.reason, str(row))
        elif raw_id is None or item_id == f"#{label}":
            problem = VerifierError("INVALID_ARGUMENT", "MISSING_ID", f"{label.replace('-', ' ')} has no 'id'")
        elif item_id in seen:
            problem = VerifierError("INVALID_ARGUMENT", "DUPLICATE_ID", f"id {item_id!r} appears more than once")
        seen.add(item_id)
        if problem is None:
            try:
                request = requests.chain_request(
                    row, opts.metrics, requests.knowledge_options(**opts.knowledge),
                    requests.info_gain_options(**opts.info_gain))
            except VerifierError as exc:
                problem = exc
        planned.append((position, error_record(item_id, problem, extra) if problem
                        else Item(position, item_id, request, extra)))
    return planned


class _Writer:
    """Writes records as they finish, or in input order when asked (a reorder buffer)."""

    def __init__(self, journal: Journal, summary: BatchSummary, keep_order: bool, positions: list[int], bar):
        self.journal, self.summary, self.keep_order, self.bar = journal, summary, keep_order, bar
        self._order = positions  # input positions still to write, ascending
        self._next = 0
        self._buffer: dict[int, dict] = {}

    def put(self, position: int, record: dict[str, Any]) -> None:
        if not self.keep_order:
            self._write(record)
            return
        self._buffer[position] = record
        while self._next < len(self._order) and self._order[self._next] in self._buffer:
            self._write(self._buffer.pop(self._order[self._next]))
            self._next += 1

    def _write(self, record: dict[str, Any]) -> None:
        self.journal.write(record)
        status = record["status"] if isinstance(record["status"], str) else record["status"]["code"]
        self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
        self.summary.written += 1
        if self.bar is not None:
            self.bar.update(1)


class _Scheduler:
    """Feeds items to one stream per server, retries retryable item errors, reopens broken streams."""

    def __init__(self, opts: BatchOptions, items: list[Item], writer: _Writer):
        self.opts, self.writer = opts, writer
        self.queue: asyncio.Queue = asyncio.Queue()
        for item in items:
            self.queue.put_nowait(item)
        self.remaining = len(items)
        self.finished = asyncio.Event()
        if not items:
            self.finished.set()

    def _finish(self, item: Item, record: dict[str, Any]) -> None:
        self.writer.put(item.position, record)
        self.remaining -= 1
        if self.remaining == 0:
            self.finished.set()

    async def _retry_later(self, item: Item, error: VerifierError) -> None:
        item.attempts += 1
        if item.attempts >= self.opts.max_attempts:
            self._finish(item, error_record(item.id, error, item.extra))
            return
        await asyncio.sleep(backoff_s(item.attempts, base_s=0.25, cap_s=5.0))
        self.queue.put_nowait(item)

    async def _next_item(self) -> Item | None:
        """The next queued item, or None once every item is finished; never drops an item when cancelled."""
        getter = asyncio.ensure_future(self.queue.get())
        done_waiter = asyncio.ensure_future(self.finished.wait())
        try:
            await asyncio.wait({getter, done_waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if getter.done() and not getter.cancelled():
                self.queue.put_nowait(getter.result())  # taken just as the stream broke: keep it
            getter.cancel()
            raise
        finally:
            done_waiter.cancel()
        if not getter.done():
            getter.cancel()
            return None
        return getter.result()

    async def _stream_once(self, client: AsyncVerifierClient, window: int) -> None:
        inflight: dict[str, Item] = {}
        slots = asyncio.Semaphore(window)
        broken = asyncio.Event()

        async def outgoing():
            while not self.finished.is_set():
                await slots.acquire()
                item = await self._next_item()
                if item is None:
                    return
                if broken.is_set():  # gRPC reads this iterator in its own task, which can outlive the call
                    self.queue.put_nowait(item)
                    return
                inflight[item.id] = item
                yield item.id, item.request

        try:
            async for item_id, result in client.stream_chains(outgoing()):
                item = inflight.pop(item_id, None)
                slots.release()
                if item is None:
                    continue
                if isinstance(result, VerifierError):
                    if result.code in RETRYABLE and result.reason not in NOT_RETRIED:
                        asyncio.ensure_future(self._retry_later(item, result))
                    else:
                        self._finish(item, error_record(item.id, result, item.extra))
                else:
                    self._finish(item, result.to_record(item.id, item.extra))
        finally:
            broken.set()
            for item in inflight.values():  # the stream broke: these go back to the queue
                self.queue.put_nowait(item)
            inflight.clear()

    async def worker(self, client: AsyncVerifierClient, window: int) -> None:
        failures = 0
        while not self.finished.is_set():
            try:
                await self._stream_once(client, window)
                failures = 0
            except VerifierError as exc:
                failures += 1
                log.warning("stream to %s failed (%s); %d of %d", client.target, exc, failures,
                            self.opts.stream_failures)
                if failures >= self.opts.stream_failures:
                    raise BatchError(f"server {client.target} keeps failing: {exc}") from exc
                await asyncio.sleep(backoff_s(failures, base_s=0.5, cap_s=10.0))

    async def run(self, clients: list[AsyncVerifierClient]) -> None:
        windows = [max(1, self.opts.concurrency // len(clients) + (i < self.opts.concurrency % len(clients)))
                   for i in range(len(clients))]
        workers = [asyncio.ensure_future(self.worker(c, w)) for c, w in zip(clients, windows)]
        finished = asyncio.ensure_future(self.finished.wait())
        try:
            while not finished.done():
                await asyncio.wait([finished, *workers], return_when=asyncio.FIRST_COMPLETED)
                alive = [w for w in workers if not w.done()]
                if not finished.done() and not alive:
                    errors = [w.exception() for w in workers if w.exception()]
                    raise BatchError(f"every server failed: {errors[0] if errors else 'streams ended'}")
        finally:
            for task in (*workers, finished):
                task.cancel()
            await asyncio.gather(*workers, finished, return_exceptions=True)


async def _score(opts: BatchOptions, addresses: list[str], items: list[Item], writer: _Writer) -> None:
    clients = [AsyncVerifierClient(address, credentials=opts.credentials, metadata=opts.metadata)
               for address in addresses]
    try:
        for client in clients:
            await client.wait_ready("kgverify.v1.KnowledgeService", timeout_s=600)
            if "infogain" in opts.metrics:
                await client.wait_ready("kgverify.v1.InfoGainService", timeout_s=600)
        await _Scheduler(opts, items, writer).run(clients)
    finally:
        for client in clients:
            await client.close()


async def run_batch(opts: BatchOptions, settings=None) -> BatchSummary:
    """Scores every row not yet in the journal; rows that fail get an error status, the run goes on."""
    from .embedded import EmbeddedServerError, embedded_server

    if not opts.input.is_file():
        raise BatchError(f"input {opts.input} does not exist")
    summary = BatchSummary()
    journal = Journal(opts.output, opts.fsync_interval_s)
    try:
        planned = plan_items(opts, journal, summary)
        items = [p for _, p in planned if isinstance(p, Item)]
        bar = tqdm(total=len(planned), unit="chain", desc="scoring", disable=not opts.progress, file=sys.stderr)
        writer = _Writer(journal, summary, opts.keep_order, [position for position, _ in planned], bar)
        for position, record in planned:
            if isinstance(record, dict):
                writer.put(position, record)
        if items and opts.servers:
            await _score(opts, opts.servers, items, writer)
        elif items:
            try:
                required = ("kgverify.v1.KnowledgeService",) + (
                    ("kgverify.v1.InfoGainService",) if "infogain" in opts.metrics else ())
                async with embedded_server(settings, required=required) as address:
                    await _score(opts, [address], items, writer)
            except EmbeddedServerError as exc:
                raise BatchError(str(exc)) from exc
        bar.close()
    finally:
        journal.close()
    for path in opts.export:
        export_journal(opts.output, path)
    return summary
