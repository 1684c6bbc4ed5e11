"""`kgverify batch`: score a dataset over the streaming RPC into a resumable JSONL journal."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import itertools
import json
import logging
import math
import os
import re
import stat
import sys
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Iterator

from kb.progress import progress_bar

from . import requests
from .aio import CONNECT_TIMEOUT_S, DEFAULT_MAX_MESSAGE_BYTES, AsyncVerifierClient, backoff_s, retry_pause_s
from .batch_io import InputError, RowError, check_input, could_be_torn_record, export_format, export_journal
from .batch_io import whole_number
from .batch_io import INPUT_ROW, complete_last_line, is_batch_record, is_error_record, read_rows, record_key, same_file
from .errors import AUTH_CODES, VerifierError, refusal_advice
from .render import printable
from .readiness import INFO_GAIN, KNOWLEDGE, KNOWLEDGE_BASE  # noqa: F401  (health service names, as before)
from .readiness import scoring_services, uses_knowledge_base, wait_until_ready

log = logging.getLogger(__name__)
RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED"}
NOT_RETRIED = {"RESPONSE_TOO_LARGE"}  # the same row would get it again
PASSTHROUGH = ("group", "question_id")
RECORD_KEYS = ("knowledge_index", "knowledge_index_paper", "coverage", "counts", "error_steps", "first_error_step",
               "info_gain", "info_gain_total", "info_gain_paper", "target", "estimator", "units", "steps",
               "llm_calls", "provenance")
METRIC_NAMES = ("ki", "infogain")
READY_TIMEOUT_S = 600.0  # how long a reachable server may take to load what the rows need before the run gives up
# Item errors that the same server gives every row until an operator acts: when the first STOP_AFTER results of a
# run all have the same one, the run stops instead of writing it to every row.
STOP_CODES = {"FAILED_PRECONDITION", "UNIMPLEMENTED", "PERMISSION_DENIED", "UNAUTHENTICATED"}
STOP_AFTER = 20
# The request options every row of a run shares, as the server names them in a field violation, and the batch
# option that sets each: a row refused for one of them (a --top-k over the server's limit, --paper with the nli
# estimator) says every row will be, so the run stops at once (exit 2) and journals none of those refusals.
RUN_OPTIONS = {"knowledge_options.top_k": "--top-k", "knowledge_options.judge": "--judge",
               "knowledge_options.retrieval_mode": "--retrieval-mode", "knowledge_options.splitter": "--splitter",
               "info_gain_options.window": "--window", "info_gain_options.mode": "--paper",
               "info_gain_options.estimator": "--estimator", "info_gain_options.units": "--units",
               "info_gain_options.splitter": "--splitter", "metrics": "--metrics"}
NO_TARGET = "the row has no answer or gold_answer: InfoGain needs a target (KI only)"
NO_QUESTION = "the row has no question: InfoGain needs the question (KI only)"
LETTER = re.compile(r"\(?[A-Za-z]\)?[.):]?")  # an answer that names an option by its letter alone
REQUEST_HEADROOM_BYTES = 16 * 1024  # of a stream message: its item id and framing around the chain request
STREAM_ITEM_OVERHEAD_BYTES = 64  # a stream message's bytes besides its chain request (the item id, field headers)
STALL_TIMEOUT_S = 900.0  # the server gives each stream item at most 600 s: a stream silent for longer is stuck
# With --keep-order, finished records held for an earlier row still being scored: past this many (or 4 per chain in
# flight, if more), no new row is read until the earlier one is written.
REORDER_LIMIT = 1024
# A row shed by a busy server (RESOURCE_EXHAUSTED / OVERLOADED: more rows in flight than it takes, e.g. several runs
# sharing it), or answered UNAVAILABLE during an outage of what it needs (the judge's or the LM's vLLM restarting,
# models still loading), is sent again until it is taken, as long as some row finished within this long (the
# server's own limit per stream item is 600 s): an outage of minutes costs no error records; only a run that has
# finished no row for this long uses up the row's attempts.
OVERLOAD_PATIENCE_S = 600.0
# A stream that breaks (as a whole, not one item's error) while rows are in flight may have been broken by one of
# them (e.g. a result over this client's message size limit): a row in flight at SOLO_AFTER_BREAKS breaks is sent
# again alone (one break is no sign: a server restarting, a proxy ending old streams), and a row that breaks the
# stream with an error that is not an outage's (UNAVAILABLE: a restart, a crash) POISON_BREAKS times while alone
# gets that error as its record and the run goes on.
SOLO_AFTER_BREAKS = 2
POISON_BREAKS = 2
OUTAGE_CODES = {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"}
_MESSAGE_LIMIT = re.compile(r"(?:Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


def _never_connected(error: VerifierError) -> bool:
    """Whether a stream failed before reaching the server (nothing listening, a restart): its rows were never
    sent, so they say nothing about which row breaks streams."""
    return error.code == "UNAVAILABLE" and "failed to connect" in error.message.lower()


def message_limit(error: VerifierError) -> int | None:
    """The message size limit a RESOURCE_EXHAUSTED "Sent/Received message larger than max (N vs. LIMIT)" names."""
    if error.code != "RESOURCE_EXHAUSTED":
        return None
    match = _MESSAGE_LIMIT.search(error.message)
    return int(match.group(2)) if match else None


class BatchError(RuntimeError):
    """The run itself failed (as opposed to individual rows)."""

    exit_code = 1


class JournalError(BatchError):
    """The journal cannot take the next record (a full disk, a file size limit): the run stops at once."""


class BatchStopped(BatchError):
    """The run cannot start or go on until something is fixed: its options, its input file or the server."""

    exit_code = 2


def parse_metrics(value: str | Iterable[str]) -> tuple[str, ...]:
    """("ki", "infogain") from "KI,infogain" or a sequence of names (any case); ValueError naming an unknown one."""
    names = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for name in names:
        key = str(name).strip().lower()
        if key and key not in METRIC_NAMES:
            raise ValueError(f"unknown metric {str(name).strip()!r} (choose from {', '.join(METRIC_NAMES)}, "
                             "comma-separated)")
        if key and key not in out:
            out.append(key)
    if not out:
        raise ValueError(f"no metric given (choose from {', '.join(METRIC_NAMES)}, comma-separated)")
    return tuple(out)


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
    ready_timeout_s: float = READY_TIMEOUT_S
    # False: evidence is journaled by fact id, source and score only (its text, repeated for every claim that
    # retrieved it, is most of a record: ~89 KB per MedBullets explanation chain)
    evidence_text: bool = True
    # A stream that returns nothing for this long while rows are in flight is broken and its rows sent again
    # (0: never); the server's own limit per stream item is 600 s.
    stall_timeout_s: float = STALL_TIMEOUT_S


@dataclass
class Item:
    position: int
    id: str
    request: Any
    extra: dict[str, Any]
    notes: dict[str, Any] = field(default_factory=dict)  # added to the row's result record (not to an error)
    attempts: int = 0
    size: int = 0  # the request's serialized size
    sheds: int = 0  # times a busy server shed it (OVERLOADED) or an outage refused it, not counted as attempts
    label: str = ""  # where it is in the input: line-N (JSONL) or row-N (CSV, Parquet)
    breaks: int = 0  # streams that broke while it was in flight: from SOLO_AFTER_BREAKS on it is sent alone
    solo_breaks: int = 0  # of those, the ones it was the only row in flight of


@dataclass
class BatchSummary:
    total: int = 0
    skipped: int = 0
    skipped_errors: int = 0  # of those, rows whose record is an error (kept: no --retry-errors)
    retried: int = 0  # rows whose error record is being replaced (retry_errors)
    written: int = 0
    ki_only: int = 0  # rows without answer or gold_answer: InfoGain was asked but cannot be scored
    ki_only_no_question: int = 0  # rows with a target but no question: InfoGain was asked but cannot be scored
    statuses: dict[str, int] = field(default_factory=dict)

    def written_note(self, output: Path) -> str:
        """What a run that was refused leaves (without "run again": the same command would be refused again)."""
        return f"the {self.written} records written to {output} stay" if self.written else "this run wrote nothing"

    def progress(self, output: Path) -> str:
        """What a run that ended early leaves, and how to go on (resuming skips the rows written)."""
        earlier = f" ({self.skipped} more were there already)" if self.skipped else ""
        return f"{self.written} rows written to {output}{earlier}; run the same command again to resume"


def channel_security(ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                     token_file: Path | None = None) -> tuple[Any, tuple]:
    """(TLS credentials or None, call metadata) for servers that require TLS, mTLS or a bearer token."""
    credentials = None
    if ca or cert or key:
        import grpc

        if bool(cert) != bool(key):
            raise BatchStopped("give both --tls-cert and --tls-key (mTLS) or neither")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None)
    metadata: tuple = ()
    if token_file:
        from .security import read_token_file

        try:
            token = read_token_file(token_file)  # (the server's format: comments and blank lines left out)
        except ValueError as exc:
            raise BatchStopped(str(exc)) from None
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
        check_output_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchStopped(f"--output {self.path}: cannot create its directory {self.path.parent} "
                               f"({exc.strerror or exc})") from None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):  # replaced by a pipe or device since the check
                raise BatchStopped(f"--output {self.path} is not a regular file: give a JSONL file to write")
            os.set_blocking(self._fd, True)  # (O_NONBLOCK only kept the open of a pipe from waiting for a reader)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BatchError(f"another batch run is writing {self.path}") from None
            self.done, self.failed = self._recover()
        except BaseException:
            os.close(self._fd)
            raise
        self.fsync_interval_s = fsync_interval_s
        self._synced_at = time.monotonic()
        self._size = os.fstat(self._fd).st_size  # where the last whole record ends

    def _recover(self) -> tuple[set[str], set[str]]:
        """(ids whose last record is a result, ids whose last record is an error); drops a torn last line, and
        ends with its newline a last line that holds a whole record without one (see complete_last_line).

        BatchStopped, the file left as it is, when it is not a journal: a complete line that is a JSON value but
        not a batch record (a dataset row, e.g. --input given as --output), no batch record at all, or only an
        unterminated line that cannot be the start of a record. Lines that are not JSON (damage) are skipped."""
        size = os.fstat(self._fd).st_size
        if size == 0:
            return set(), set()
        keep = _end_of_last_line(self.path, size)
        done: set[str] = set()
        failed: set[str] = set()
        records = 0
        with open(self.path, "rb") as fh:  # line by line: a journal of millions of rows is never held whole
            for number, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    tail = line
                    whole = complete_last_line(line)
                    if whole is not None:  # a record, only its newline missing: kept (not scored again)
                        records += 1
                        self._mark(whole, done, failed)
                        try:
                            os.write(self._fd, b"\n")
                        except OSError as exc:
                            raise JournalError(f"cannot write {self.path} ({exc.strerror or exc}): its last record "
                                               "lacks its newline, which could not be added") from None
                        keep = size = size + 1
                    break
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):  # not JSON, or not UTF-8
                    continue
                if not is_batch_record(record):
                    raise _not_a_journal(self.path, f"line {number} is not a batch record")
                records += 1
                self._mark(record, done, failed)
            else:
                tail = b""
        if not records and (keep > 0 or not could_be_torn_record(tail)):
            raise _not_a_journal(self.path, "it holds no batch record")
        if keep < size:
            os.ftruncate(self._fd, keep)
        return done, failed

    @staticmethod
    def _mark(record: dict[str, Any], done: set[str], failed: set[str]) -> None:
        """A later record of an id replaces an earlier one (see batch_io.journal_records)."""
        item_id = record_key(record)
        if is_error_record(record):
            done.discard(item_id)
            failed.add(item_id)
        else:
            failed.discard(item_id)
            done.add(item_id)

    @staticmethod
    def encode(record: dict[str, Any]) -> bytes:
        """The record's journal line; ValueError for a NaN or infinite number, UnicodeError for a lone surrogate."""
        return (json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n").encode()

    def write(self, record: dict[str, Any], line: bytes | None = None) -> None:
        """Appends the record (`line`: its encode(), when the caller made it already); OSError, the journal
        left ending with the last whole record, when it cannot be written whole (e.g. the disk is full)."""
        data = memoryview(line if line is not None else self.encode(record))
        written = 0
        try:
            while written < len(data):  # a write cut short (the disk filling up): the next says why, or goes on
                step = os.write(self._fd, data[written:])
                if not step:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += step
        except OSError:
            os.ftruncate(self._fd, self._size)  # no torn record is left before the records of a later run
            raise
        self._size += len(data)
        self._mark(record, self.done, self.failed)
        if time.monotonic() - self._synced_at >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._synced_at = time.monotonic()

    def close(self, discard_if_empty: bool = False) -> None:
        """Syncs and releases the journal; discard_if_empty removes it when it holds nothing (a run that stopped
        before writing a record leaves no empty journal behind)."""
        try:
            os.fsync(self._fd)
            if discard_if_empty and os.fstat(self._fd).st_size == 0:
                self.path.unlink(missing_ok=True)  # still holding the lock: no other run is writing it
        finally:
            os.close(self._fd)  # releases the lock


def _not_a_journal(path: Path, why: str) -> BatchStopped:
    return BatchStopped(f"--output {path} exists and is not a kgverify batch journal ({why}); it was left as it "
                        "is: give a new file, or the journal of an earlier run to resume it")


def check_output_path(path: Path) -> None:
    """BatchStopped when --output names something other than a regular file or a missing path (a directory, a
    pipe, a device), before it is opened (opening a pipe would wait for a reader)."""
    path = Path(path)
    if path.is_dir():
        raise BatchStopped(f"--output {path} is a directory: give a file (e.g. {path / 'scores.jsonl'})")
    if path.exists() and not path.is_file():
        raise BatchStopped(f"--output {path} is not a regular file: give a JSONL file to write")
    if path.name.lower().endswith(".gz"):  # (the journal is appended a record at a time: never compressed)
        raise BatchStopped(f"--output {path}: the journal is plain JSONL, written a record at a time, and cannot be "
                           f"gzip-compressed: give a name without .gz (e.g. {path.name[:-3] or 'scores.jsonl'}; a "
                           "journal an earlier run wrote under this name is plain JSONL: rename it) and compress it "
                           "after the run if you like (nothing was written)")


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


def _where(label: str) -> str:
    return label.replace("-", " ")


def _located(error: VerifierError, label: str) -> VerifierError:
    """A row's INVALID_ARGUMENT (a field of the row, found by this client or the server) naming where the row is
    in the input, as the other errors of a row's content do."""
    if error.code != "INVALID_ARGUMENT" or not label:
        return error
    return replace(error, message=f"{_where(label)}: {error.message}")


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=True, allow_nan=True, default=repr)
    return text if len(text) <= limit else text[:limit] + "…"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _row_id(raw_id: Any, label: str) -> tuple[str, VerifierError | None]:
    """(the row's id as text, the problem that keeps it from being one: MISSING_ID or INVALID_ID)."""
    if raw_id is None or raw_id == "":
        return "", VerifierError("INVALID_ARGUMENT", "MISSING_ID", f"{_where(label)} has no 'id'")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        hint = (" (a column of whole numbers with gaps is read as floats: write the ids as integers or strings)"
                if isinstance(raw_id, float) else "")
        return _shown(raw_id), VerifierError(
            "INVALID_ARGUMENT", "INVALID_ID",
            f"{_where(label)}: 'id' must be a string or a whole number, not {type(raw_id).__name__} "
            f"{_shown(raw_id)}{hint}")
    text = str(raw_id)
    if not _encodes(text):
        return text.encode("utf-8", "backslashreplace").decode("utf-8"), VerifierError(
            "INVALID_ARGUMENT", "INVALID_ID",
            f"{_where(label)}: 'id' is not valid Unicode text (a lone surrogate such as \\ud800, e.g. from cut-off "
            "model output)")
    return text, None


def _bad_value(value: Any, path: str) -> str | None:
    """The path of the first value a journal line cannot hold (a NaN or infinite number, text with a lone
    surrogate), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} ({value})"
    if isinstance(value, str):
        return None if _encodes(value) else f"{path} (text with a lone surrogate)"
    if isinstance(value, dict):
        for key, inner in value.items():
            found = _bad_value(key, f"{path} key") or _bad_value(inner, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            found = _bad_value(inner, f"{path}[{index}]")
            if found:
                return found
    return None


def _extra_of(row: Any) -> tuple[dict[str, Any], VerifierError | None]:
    """The pass-through fields a record can carry, and the problem of one it cannot (NaN, a lone surrogate)."""
    extra: dict[str, Any] = {}
    problem = None
    for key in PASSTHROUGH:
        if not isinstance(row, dict) or key not in row:
            continue
        try:
            bad = _bad_value(row[key], key)
            json.dumps(row[key])  # (nested too deeply to write: RecursionError)
        except RecursionError:
            bad = f"{key} (nested too deeply)"
        if bad is None:  # (a whole float, from a column with a gap, as its integer: report pairs 3 with 3.0)
            extra[key] = whole_number(row[key])
        elif problem is None:
            problem = VerifierError("INVALID_ARGUMENT", "INVALID_FIELD",
                                    f"{bad}: cannot be journaled (JSON has no NaN or infinity, and text must be "
                                    "valid Unicode); fix the value or leave the field out")
    return extra, problem


def max_request_bytes(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> int:
    """The largest chain request a stream item can carry (its id and framing take the rest)."""
    return max_message_bytes - REQUEST_HEADROOM_BYTES


def _too_large(size: int, limit: int, label: str) -> VerifierError:
    return VerifierError(
        "INVALID_ARGUMENT", "REQUEST_TOO_LARGE",
        f"{_where(label)}: its request is {size:,} bytes; one stream item can carry at most {limit:,} (the 16 MiB "
        "gRPC message limit): shorten the row (the server scores at most limits.max_reasoning_chars characters of "
        "reasoning anyway)")


def plan_items(opts: BatchOptions, journal: Journal, summary: BatchSummary,
               resumed: tuple[set, set] | None = None) -> Iterator[tuple[int, Item | dict]]:
    """(input position, item to send or error record of a row that is bad before any call), in input order, read
    as they are asked for (a dataset is never held whole); `resumed`: the journal's (done, failed) keys to skip,
    by default those it holds when the first row is read.

    Each request is built and sized here, so a row that cannot be sent (a field that is not valid Unicode text,
    a request over the transport limit) or journaled (a NaN group) gets its own INVALID_ARGUMENT record instead
    of failing the run. A row without an id of its own (missing, invalid, or repeated: the first row with the id
    is scored) gets its record under `<id>#<line or row>` with INPUT_ROW set, so it never replaces the record of
    a real row (readers take the last record of each key, see record_key)."""
    done, failed = resumed if resumed is not None else (set(journal.done), set(journal.failed))
    seen: set[str] = set()
    limit = max_request_bytes()
    for position, (label, row) in enumerate(read_rows(opts.input, opts.input_format)):
        summary.total += 1
        extra, problem = _extra_of(row)
        raw_id = row.get("id") if isinstance(row, dict) else getattr(row, "row_id", None)
        item_id, id_problem = _row_id(raw_id, label)
        duplicate = id_problem is None and item_id in seen
        if id_problem is None:
            seen.add(item_id)
        own_key = id_problem is None and not duplicate
        record_id = item_id if own_key else f"{item_id}#{label}"
        key = record_id if own_key else (record_id, INPUT_ROW)
        if own_key is False:
            extra[INPUT_ROW] = label
        if key in done or (key in failed and (not own_key or not opts.retry_errors)):
            summary.skipped += 1  # (a row without an id of its own never changes: --retry-errors leaves it)
            summary.skipped_errors += key in failed and own_key
            continue
        if key in failed:
            summary.retried += 1
        if isinstance(row, RowError):
            problem = VerifierError("INVALID_ARGUMENT", row.reason, str(row))
        elif id_problem is not None:
            problem = id_problem
        elif duplicate:
            problem = VerifierError(
                "INVALID_ARGUMENT", "DUPLICATE_ID",
                f"id {item_id!r} appears more than once: {_where(label)} is not scored (the first row "
                f"with this id is); give each row its own id")
        notes: dict[str, Any] = {}
        request, size = None, 0
        if problem is None:
            try:
                request = requests.chain_request(
                    row, opts.metrics, requests.knowledge_options(**opts.knowledge),
                    requests.info_gain_options(**opts.info_gain))
            except VerifierError as exc:
                problem = _located(exc, label)
            except UnicodeError:  # protobuf takes only text that encodes as UTF-8
                field_path = _bad_value({k: v for k, v in row.items() if k in requests.ROW_KEYS}, "") or "a field"
                problem = VerifierError("INVALID_ARGUMENT", "INVALID_FIELD",
                                        f"{_where(label)}: {field_path.lstrip('.')} cannot be sent (only valid "
                                        "Unicode text can; e.g. cut-off model output): fix the text")
            else:
                size = request.ByteSize()
                if size > limit:
                    problem, request = _too_large(size, limit, label), None
                elif "ki" in opts.metrics and "infogain" in opts.metrics and not (
                        request.answer.strip() or request.gold_answer.strip()):
                    request.metrics.remove(requests.METRICS["infogain"])
                    notes["info_gain_null_reason"] = NO_TARGET
                    summary.ki_only += 1
                elif "ki" in opts.metrics and "infogain" in opts.metrics and not request.question.strip():
                    request.metrics.remove(requests.METRICS["infogain"])  # (the server refuses InfoGain without it)
                    notes["info_gain_null_reason"] = NO_QUESTION
                    summary.ki_only_no_question += 1
        yield position, (error_record(record_id, problem, extra) if problem
                         else Item(position, item_id, request, extra, notes, size=size, label=label))


@dataclass
class _Census:
    """What a first pass over the input finds before anything is sent: how many rows get a record and how many
    are sent, and the few requests that stand for all of them when asking a server whether it is ready (the
    first asking for KI, the first asking for InfoGain, the first judged against the knowledge base)."""

    planned: int = 0
    items: int = 0
    kb_rows: int = 0
    chains: int = 0  # items with a reasoning chain (text or steps): the server refuses the others
    questions: int = 0  # items with a question: InfoGain needs it
    missing_id: int = 0  # rows planned as a MISSING_ID record
    invalid_id: int = 0  # rows planned as an INVALID_ID record
    invalid_id_message: str = ""  # the first one's
    letter_targets: int = 0  # rows asking for InfoGain of an option letter ("B") without their options
    requests: list = field(default_factory=list)
    # Set when a server runs without a KB while some rows bring their own context: the kb_rows get KB_NOT_LOADED
    # (said up front), which is then no sign that the server fails every row.
    kb_not_loaded: bool = False

    def add(self, planned: Item | dict) -> None:
        self.planned += 1
        if not isinstance(planned, Item):
            status = planned.get("status")
            reason = status.get("reason") if isinstance(status, dict) else None
            self.missing_id += reason == "MISSING_ID"
            if reason == "INVALID_ID":
                self.invalid_id += 1
                self.invalid_id_message = self.invalid_id_message or str(status.get("message", ""))
            return
        self.items += 1
        request = planned.request
        self.chains += bool(request.reasoning.strip() or any(step.strip() for step in request.steps))
        self.questions += bool(request.question.strip())
        target = request.gold_answer if request.gold_answer.strip() else request.answer
        self.letter_targets += bool(requests.METRICS["infogain"] in request.metrics and not request.choices
                                    and LETTER.fullmatch(target.strip()))
        kb = uses_knowledge_base(request)
        self.kb_rows += kb
        new_need = (kb and not any(uses_knowledge_base(r) for r in self.requests)) or any(
            metric in request.metrics and not any(metric in r.metrics for r in self.requests)
            for metric in requests.METRICS.values())
        if new_need:
            self.requests.append(request)


def _items_to_send(rows: Iterable[tuple[int, Item | dict]], writer: _Writer, clients: list) -> Iterator[Item]:
    """The items of the planned rows, as they are asked for; the record of a row that is bad before any call is
    written as it is reached (in its place with --keep-order)."""
    for position, planned in rows:
        writer.expect(position)
        if isinstance(planned, Item):
            if not clients:  # the first pass found nothing to send
                raise InputError(f"{planned.id!r} is a row to score that was not there when the input was first "
                                 "read: the input changed during the run")
            yield planned
        else:
            writer.put(position, planned)


def _services(census: _Census) -> tuple[str, ...]:
    """The services the rows are scored by (the stream itself is a KnowledgeService call)."""
    return scoring_services(census.requests)


class ServerRefused(BatchStopped):
    """A server refuses this client's calls (UNAUTHENTICATED, PERMISSION_DENIED): a token to pass, not a run to
    resume."""

    def __init__(self, target: str, error: VerifierError, token_given: bool, what: str):
        self.error = error
        super().__init__(f"the server at {target} refused the calls: {error}; {refusal_advice(error, token_given)} "
                         f"({what}; running the same command again cannot help)")


def _not_ready(target: str, error: VerifierError) -> BatchError:
    if error.reason == "SERVER_UNREACHABLE":
        return BatchStopped(error.message)
    if error.code in STOP_CODES:
        return BatchStopped(f"the server at {target} cannot score these rows: {error}; this run wrote nothing")
    return BatchError(f"the server at {target} is not ready: {error}")


def _token_given(client: AsyncVerifierClient) -> bool:
    return any(key == "authorization" for key, _ in client.metadata)


async def _check_ready(client: AsyncVerifierClient, census: _Census, timeout_s: float) -> None:
    """Waits while the server loads what the rows need, and nothing else (timeout_s in all); BatchStopped at
    once when it cannot be reached, will not serve a service the rows need (a KB that failed to load included)
    or refuses this client's calls (ServerRefused)."""
    said: list[str] = []

    def waiting(message: str) -> None:
        if not said:
            print(message, file=sys.stderr)
            said.append(message)

    deadline = time.monotonic() + timeout_s
    try:
        await wait_until_ready(client, census.requests, timeout_s, on_waiting=waiting, knowledge_base=False)
        await client.check_access(KNOWLEDGE)  # health is exempt from auth: the stream would be refused
    except VerifierError as exc:
        if exc.code in AUTH_CODES:
            raise ServerRefused(client.target, exc, _token_given(client), "this run wrote nothing") from None
        raise _not_ready(client.target, exc) from None
    kb_rows = census.kb_rows
    if not kb_rows:
        return
    try:
        await client.wait_ready(KNOWLEDGE_BASE, timeout_s=max(deadline - time.monotonic(), 0.0),
                                connect_timeout_s=CONNECT_TIMEOUT_S, on_waiting=waiting)
    except VerifierError as exc:
        if exc.reason != "KB_NOT_LOADED" or kb_rows == census.items:
            raise _not_ready(client.target, exc) from None
        # A server run without a KB still judges rows against their own context passages.
        print(f"note: the server at {client.target} runs without a knowledge base: the {kb_rows} of {census.items} "
              "rows without context passages will get KB_NOT_LOADED", file=sys.stderr)
        census.kb_not_loaded = True


class _Writer:
    """Writes records as they finish, or in input order when asked (a reorder buffer of the rows read so far:
    expect() adds each position as its row is read, in input order).

    `room` is clear while the reorder buffer holds `limit` records or more: the scheduler then reads no new row
    until the earlier one they wait for is written, so the buffer stays bounded however large the dataset."""

    def __init__(self, journal: Journal, summary: BatchSummary, keep_order: bool, positions: Iterable[int] = (),
                 bar=None, limit: int = REORDER_LIMIT):
        self.journal, self.summary, self.keep_order, self.bar = journal, summary, keep_order, bar
        self._order: deque[int] = deque(positions)  # input positions read and not yet written, ascending
        self._buffer: dict[int, tuple[dict, bytes]] = {}
        self.limit = limit
        self.room = asyncio.Event()
        self.room.set()

    def expect(self, position: int) -> None:
        if self.keep_order:
            self._order.append(position)

    def put(self, position: int, record: dict[str, Any]) -> None:
        entry = self._encoded(record)
        if not self.keep_order:
            self._write(*entry)
            return
        self._buffer[position] = entry
        while self._order and self._order[0] in self._buffer:
            self._write(*self._buffer.pop(self._order.popleft()))
        if len(self._buffer) >= self.limit:
            self.room.clear()
        else:
            self.room.set()

    def flush(self) -> None:
        """Writes the records held for an earlier row still unwritten (--keep-order), in input order, when the run
        ends without it (interrupted, or failed): they are results already paid for, and a resumed run scores only
        the rows without a record, whatever their order in the journal. A journal that cannot take them keeps what
        it has (the run ends with its own error)."""
        if not self._buffer:
            return
        held, self._buffer = self._buffer, {}
        self._order.clear()
        try:
            for position in sorted(held):
                self._write(*held[position])
        except JournalError as exc:
            log.warning("%s", exc)
        self.room.set()

    @staticmethod
    def _encoded(record: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """(record, journal line); a result a journal line cannot hold (a NaN or infinite number from the server)
        becomes that row's error record instead of stopping the run."""
        try:
            return record, Journal.encode(record)
        except (ValueError, UnicodeError, RecursionError):
            try:
                where = _bad_value(record, "") or "a value"
            except RecursionError:
                where = "a value nested too deeply"
            error = VerifierError(
                "INTERNAL", "UNWRITABLE_RESULT",
                f"the server's result holds {where.lstrip('.')}, which JSON cannot hold, so none of it was kept "
                "(an undefined score should be null); score the row again with --retry-errors")
            kept = {k: record[k] for k in (*PASSTHROUGH, INPUT_ROW) if k in record}
            replacement = error_record(record["id"], error, kept)
            return replacement, Journal.encode(replacement)

    def _write(self, record: dict[str, Any], line: bytes) -> None:
        try:
            self.journal.write(record, line)
        except OSError as exc:
            raise JournalError(f"cannot write {self.journal.path} ({exc.strerror or exc}); "
                               + self.summary.progress(self.journal.path)) from None
        status = record["status"] if isinstance(record["status"], str) else record["status"]["code"]
        self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
        self.summary.written += 1
        if self.bar is not None:
            self.bar.update(1)


def refused_options(error: VerifierError | None) -> list[str]:
    """The batch options (RUN_OPTIONS) a row's INVALID_ARGUMENT refuses, when it refuses nothing else of the row;
    [] for any other result."""
    if error is None or error.code != "INVALID_ARGUMENT" or not error.field_violations:
        return []
    fields = [name for name, _ in error.field_violations]
    if not all(name in RUN_OPTIONS for name in fields):
        return []
    return list(dict.fromkeys(RUN_OPTIONS[name] for name in fields))


class _Tripwire:
    """Watches a run's first results: all the same STOP_CODES error means the server fails every row alike.

    `expected`: error reasons announced before the run for some rows (KB_NOT_LOADED from a server without a KB,
    for the rows without context passages while others have theirs): not counted either way."""

    def __init__(self, n: int, expected: frozenset[str] = frozenset()):
        self.n, self.seen, self.first, self.same, self.expected = n, 0, None, True, expected

    def observe(self, error: VerifierError | None) -> VerifierError | None:
        """The error to stop on, once the first n results all had it (None for a result)."""
        if not self.same or self.seen >= self.n:
            return None
        if error is not None and error.reason in self.expected:
            return None
        self.seen += 1
        if error is None or error.code not in STOP_CODES or (
                self.first is not None and (error.code, error.reason) != (self.first.code, self.first.reason)):
            self.same = False
            return None
        self.first = self.first or error
        return self.first if self.seen == self.n else None


class _Scheduler:
    """Feeds items to one stream per server, retries retryable item errors, reopens broken streams.

    Items are taken from `items` only as a stream has room for one (an iterator reading the dataset keeps memory
    bounded: rows in flight, waiting for a retry or, with --keep-order, held for an earlier row); `count` is how
    many it will give (the tripwire watches the first of them)."""

    def __init__(self, opts: BatchOptions, items: Iterable[Item], writer: _Writer, count: int | None = None,
                 kb_not_loaded: int = 0):
        """`kb_not_loaded`: of the `count` items, those announced to get KB_NOT_LOADED (a server without a KB;
        the others bring their context), which the tripwire leaves out."""
        self.opts, self.writer = opts, writer
        if count is None:
            items = list(items)
            count = len(items)
        self._source: Iterator[Item] | None = iter(items)
        self._room: asyncio.Event | None = getattr(writer, "room", None)
        self.failure: Exception | None = None  # reading the items failed: the run stops with it
        self.queue: asyncio.Queue = asyncio.Queue()  # items sent again (a broken stream, a retry)
        self.remaining = 0  # items taken from the source and not finished
        self.finished = asyncio.Event()
        self.tripwire = _Tripwire(min(STOP_AFTER, count - kb_not_loaded),
                                  frozenset({"KB_NOT_LOADED"}) if kb_not_loaded else frozenset())
        self.stop: VerifierError | None = None
        self.refused: list[str] = []  # the run's options the server refused (self.stop is its error)
        self.message_limits: dict[str, int] = {}  # server -> the message size it was found to refuse above
        self.finished_at = time.monotonic()  # when a row last finished (or the run started)
        self._outage_logged = False
        self.suspect: Item | None = None  # the last row alone in flight when a stream broke
        self.shared: asyncio.Semaphore | None = None  # --concurrency over all streams (set by run)
        if not count:
            self._source = None
            self.finished.set()

    def _finish(self, item: Item, record: dict[str, Any], error: VerifierError | None = None) -> None:
        if self.stop is not None or self.failure is not None:
            return  # the run stopped: rows still in flight are scored by the next run
        self.finished_at = time.monotonic()
        if item is self.suspect:
            self.suspect = None
        refused = refused_options(error)
        if refused:  # every row would get it: stop, and journal nothing a corrected rerun would have to skip
            self.stop, self.refused = error, refused
            self.finished.set()
            return
        try:
            self.writer.put(item.position, record)
        except JournalError as exc:  # (from a stream, a retry's task or the request iterator alike)
            self.failure = exc
            self.finished.set()
            return
        self.remaining -= 1
        self.stop = self.tripwire.observe(error)
        if (self.remaining == 0 and self._source is None) or self.stop is not None:
            self.finished.set()

    def _flush(self) -> None:
        """The records held for --keep-order, written as the run ends early (see _Writer.flush)."""
        flush = getattr(self.writer, "flush", None)
        if flush is not None:
            flush()

    def _pull(self) -> Item | None:
        """The next item of the source (None once it is exhausted, or failed: the run ends with that failure)."""
        try:
            item = next(self._source)
        except StopIteration:
            self._source = None
            if self.remaining == 0:
                self.finished.set()
            return None
        except Exception as exc:  # (noqa: BLE001) e.g. the input file cut short since it was first read
            self._source, self.failure = None, exc
            self.finished.set()
            return None
        self.remaining += 1
        return item

    def _stopped(self) -> BatchStopped:
        summary, n = self.writer.summary, self.tripwire.n
        if self.refused:
            return BatchStopped(
                f"stopped: the server refuses the run's {', '.join(self.refused)}, so every row would fail: "
                f"{self.stop.message}; no row was journaled with it"
                + (f" (the {summary.written} records written to {self.writer.journal.path} before it stay)"
                   if summary.written else "") + ": change the option and run the same command again")
        return BatchStopped(
            f"stopped: the first {n} rows all failed with {self.stop}; the {summary.written} records written "
            f"to {self.writer.journal.path} stay (after fixing the cause, run again with --retry-errors to score "
            "those rows again)")

    async def _retry_later(self, item: Item, error: VerifierError) -> None:
        waits = error.reason == "OVERLOADED" or error.code == "UNAVAILABLE"
        if waits and time.monotonic() - self.finished_at < OVERLOAD_PATIENCE_S:
            if error.code == "UNAVAILABLE" and not self._outage_logged:
                self._outage_logged = True
                log.warning("%s: rows are sent again while the server recovers (up to %g s with no row "
                            "finished)", error.message, OVERLOAD_PATIENCE_S)
            item.sheds += 1  # the server is busy or recovering, not failing the row: it waits its turn
            await asyncio.sleep(retry_pause_s(error, backoff_s(min(item.sheds, 5), base_s=0.25, cap_s=5.0), 5.0))
            self.queue.put_nowait(item)
            return
        item.attempts += 1
        if item.attempts >= self.opts.max_attempts:
            self._finish(item, error_record(item.id, error, item.extra), error)
            return
        await asyncio.sleep(retry_pause_s(error, backoff_s(item.attempts, base_s=0.25, cap_s=5.0), 5.0))
        self.queue.put_nowait(item)

    async def _next_item(self) -> Item | None:
        """The next item: one to send again first, else the source's next (while the writer has room), or None
        once every item is finished; never drops an item when cancelled."""
        while True:
            if not self.queue.empty():
                return self.queue.get_nowait()
            if self.finished.is_set():
                return None
            if self._source is not None and (self._room is None or self._room.is_set()):
                item = self._pull()
                if item is not None:
                    return item
                continue
            getter = asyncio.ensure_future(self.queue.get())
            waiters = {getter, asyncio.ensure_future(self.finished.wait())}
            if self._source is not None:  # (no room: wait for the records held to be written)
                waiters.add(asyncio.ensure_future(self._room.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                if getter.done() and not getter.cancelled():
                    self.queue.put_nowait(getter.result())  # taken just as the stream broke: keep it
                getter.cancel()
                raise
            finally:
                for waiter in waiters - {getter}:
                    waiter.cancel()
            if getter.done():
                return getter.result()
            getter.cancel()

    def _too_large_for(self, client: AsyncVerifierClient, item: Item) -> bool:
        """Finishes an item whose request the server at `client` was found to refuse as too large; whether it
        was one."""
        limit = self.message_limits.get(client.target)
        if limit is None or item.size + STREAM_ITEM_OVERHEAD_BYTES <= limit:
            return False
        error = VerifierError(
            "INVALID_ARGUMENT", "REQUEST_TOO_LARGE",
            f"the row's request is {item.size:,} bytes; the server at {client.target} takes messages of at most "
            f"{limit:,} bytes (its KGV_SERVER__MAX_MESSAGE_BYTES): shorten the row")
        self._finish(item, error_record(item.id, error, item.extra), error)
        return True

    async def _stream_once(self, client: AsyncVerifierClient, window: int, results: list[int]) -> None:
        """One stream to the client's server until every item is finished; VerifierError when it breaks (the
        items in flight go back to the queue). results[0] counts the results it delivered."""
        # Each send of an item gets its own stream id (a count of this stream's sends), mapped back to the item:
        # the server answers an id an earlier item of the stream used with DUPLICATE_ID, so a retried item (an
        # UNAVAILABLE or RESOURCE_EXHAUSTED answer, sent again on the same stream) must not reuse its first id.
        # The row's own id never travels as the stream id (its length and form are the journal's business).
        inflight: dict[str, Item] = {}
        slots = asyncio.Semaphore(window)
        # With more servers than --concurrency, each stream's window of one would add up to more: the streams
        # also take a slot of the run's (self.shared) for each item, given back with the stream's own.
        shared = self.shared or asyncio.Semaphore(window)
        held = 0  # the shared slots this stream holds (all given back when it ends)

        def give_back() -> None:
            nonlocal held
            if held:
                held -= 1
                shared.release()
        broken = asyncio.Event()
        idle = asyncio.Event()  # set while no item is in flight
        idle.set()
        sends = itertools.count()
        loop = asyncio.get_running_loop()
        stall_s = self.opts.stall_timeout_s
        watchdog: list[asyncio.Timeout] = []  # nothing back for stall_s while items are in flight: break

        async def outgoing():
            nonlocal held
            while not self.finished.is_set():
                await slots.acquire()
                await shared.acquire()
                if broken.is_set():  # the stream ended while this waited: not held by it
                    shared.release()
                    return
                held += 1
                item = await self._next_item()
                if item is None:
                    return
                if broken.is_set():  # gRPC reads this iterator in its own task, which can outlive the call
                    self.queue.put_nowait(item)
                    return
                if self._too_large_for(client, item):
                    slots.release()
                    give_back()
                    continue
                # A row in flight when streams broke is sent alone, and nothing is sent beside it: a row that
                # breaks streams is found, and the others in flight with it are not held up by it for ever.
                while item.breaks >= SOLO_AFTER_BREAKS or any(
                        other.breaks >= SOLO_AFTER_BREAKS for other in inflight.values()):
                    if not inflight:
                        break
                    idle.clear()
                    try:
                        await idle.wait()
                    except BaseException:
                        self.queue.put_nowait(item)  # (never dropped: see _next_item)
                        raise
                if broken.is_set():
                    self.queue.put_nowait(item)
                    return
                send_id = str(next(sends))
                if not inflight and watchdog and stall_s:
                    watchdog[0].reschedule(loop.time() + stall_s)
                inflight[send_id] = item
                idle.clear()
                yield send_id, item.request

        try:
            async with asyncio.timeout(None) as timeout:
                watchdog.append(timeout)
                async for send_id, result in client.stream_chains(outgoing()):
                    results[0] += 1
                    item = inflight.pop(send_id, None)
                    slots.release()
                    give_back()
                    if not inflight:
                        idle.set()
                    if stall_s:
                        timeout.reschedule(loop.time() + stall_s if inflight else None)
                    if item is None:
                        continue
                    if isinstance(result, VerifierError):
                        if result.code in RETRYABLE and result.reason not in NOT_RETRIED:
                            asyncio.ensure_future(self._retry_later(item, result))
                        else:
                            self._finish(item, error_record(item.id, _located(result, item.label), item.extra),
                                         result)
                    else:
                        self._finish(item, result.to_record(item.id, {**item.extra, **item.notes},
                                                            evidence_text=self.opts.evidence_text))
        except TimeoutError:
            raise VerifierError("UNAVAILABLE", "STREAM_STALLED",
                                f"no result from {client.target} for {stall_s:g} s with {len(inflight)} rows in "
                                "flight (--stall-timeout); those rows are sent again") from None
        except VerifierError as exc:
            limit = message_limit(exc)
            if limit is None:
                raise
            # A message over the transport limit breaks the whole stream (gRPC's RESOURCE_EXHAUSTED, "Sent" by
            # this client or "Received" by the server): the items too large for it get their own record,
            # and any later one is not sent to this server again; the others go back to the queue.
            self.message_limits[client.target] = min(limit, self.message_limits.get(client.target, limit))
            quarantined = [k for k, item in inflight.items() if self._too_large_for(client, item)]
            for key in quarantined:
                del inflight[key]
            if not quarantined:
                raise
        finally:
            broken.set()
            idle.set()
            while held:
                give_back()
            stuck = list(inflight.values())
            inflight.clear()
            error = sys.exc_info()[1]
            if isinstance(error, VerifierError) and stuck and not _never_connected(error):
                for item in stuck:
                    item.breaks += 1
                if len(stuck) == 1 and self._poisoned(client, stuck[0], error):
                    results[0] += 1  # the break is explained: not the server failing
                    stuck = []
            for item in stuck:  # the stream broke: these go back to the queue
                self.queue.put_nowait(item)

    def _poisoned(self, client: AsyncVerifierClient, item: Item, error: VerifierError) -> bool:
        """Counts a stream break that `item` was the only row in flight of; finishes it with the stream's error
        (naming the row) once it broke POISON_BREAKS streams alone with an error that is not an outage's."""
        item.solo_breaks += 1
        self.suspect = item
        if error.code in OUTAGE_CODES or error.code in AUTH_CODES or item.solo_breaks < POISON_BREAKS:
            return False
        where = _where(item.label) if item.label else "the row"
        log.warning("row %r (%s) broke the stream to %s each of the %d times it was sent alone (%s): recorded as "
                    "failed", item.id, where, client.target, item.solo_breaks, error)
        poison = VerifierError(
            error.code, error.reason,
            f"{where}: the stream to {client.target} broke each of the {item.solo_breaks} times this row was sent "
            f"alone, so it was not scored: {error.message} (score it again with --retry-errors once the cause is "
            "fixed)", error.metadata)
        self._finish(item, error_record(item.id, poison, item.extra), poison)
        return True

    def _suspect_note(self) -> str:
        """For a run that stops because a server keeps failing: the row that was alone in flight the last times
        its streams broke, if any (a row the server cannot take, e.g. one that crashes it)."""
        item = self.suspect
        if item is None or item.solo_breaks < POISON_BREAKS:
            return ""
        where = _where(item.label) if item.label else "its input row"
        return (f" (row {item.id!r}, {where}, was the only row in flight the last {item.solo_breaks} times the "
                "stream broke: if the server fails on that row, fix it or leave it out)")

    async def worker(self, client: AsyncVerifierClient, window: int) -> None:
        failures = 0
        while not self.finished.is_set():
            results = [0]
            try:
                await self._stream_once(client, window, results)
                failures = 0
            except VerifierError as exc:
                if exc.code in AUTH_CODES:  # the same call is refused again: no retry
                    raise ServerRefused(client.target, exc, _token_given(client),
                                        self.writer.summary.written_note(self.writer.journal.path)) from None
                if results[0]:
                    failures = 0  # the stream worked for a while (a proxy's stream age, a restart): a new count
                failures += 1
                log.warning("stream to %s failed (%s); %d of %d", client.target, exc, failures,
                            self.opts.stream_failures)
                if failures >= self.opts.stream_failures:
                    raise BatchError(f"server {client.target} keeps failing: {exc}{self._suspect_note()}") from exc
                await asyncio.sleep(retry_pause_s(exc, backoff_s(failures, base_s=0.5, cap_s=10.0), 10.0))

    async def run(self, clients: list[AsyncVerifierClient]) -> None:
        self.shared = asyncio.Semaphore(self.opts.concurrency)
        windows = [max(1, self.opts.concurrency // len(clients) + (i < self.opts.concurrency % len(clients)))
                   for i in range(len(clients))]
        workers = [asyncio.ensure_future(self.worker(c, w)) for c, w in zip(clients, windows)]
        finished = asyncio.ensure_future(self.finished.wait())
        try:
            while not finished.done():
                await asyncio.wait([finished, *workers], return_when=asyncio.FIRST_COMPLETED)
                alive = [w for w in workers if not w.done()]
                if not finished.done() and not alive:
                    errors = [w.exception() for w in workers if not w.cancelled() and w.exception()]
                    if errors and all(isinstance(e, ServerRefused) for e in errors):
                        raise errors[0]  # every server refuses this client: exit 2, a token to pass
                    self._flush()  # (before the count of rows written is given)
                    raise BatchError(f"every server failed: {errors[0] if errors else 'streams ended'}; "
                                     + self.writer.summary.progress(self.writer.journal.path))
        finally:
            for task in (*workers, finished):
                task.cancel()
            await asyncio.gather(*workers, finished, return_exceptions=True)
            self._flush()  # (also when the run is cancelled: Ctrl-C, SIGTERM)
        if self.failure is not None:
            raise self.failure
        if self.stop is not None:
            raise self._stopped()


@asynccontextmanager
async def _clients(opts: BatchOptions, addresses: list[str], census: _Census) -> AsyncIterator[list]:
    clients = [AsyncVerifierClient(address, credentials=opts.credentials, metadata=opts.metadata)
               for address in addresses]
    try:
        for client in clients:
            await _check_ready(client, census, opts.ready_timeout_s)
        yield clients
    finally:
        for client in clients:
            await client.close()


@asynccontextmanager
async def _ready_clients(opts: BatchOptions, census: _Census, settings=None) -> AsyncIterator[list]:
    """A client per server, each ready for what the rows need (an embedded server without --server); none when
    there is nothing to score."""
    if not census.items:
        yield []
    elif opts.servers:
        async with _clients(opts, opts.servers, census) as clients:
            yield clients
    else:
        from .embedded import EmbeddedServerError, embedded_server

        try:
            async with embedded_server(settings, required=_services(census), uses_kb=census.kb_rows > 0) as address:
                async with _clients(opts, [address], census) as clients:
                    yield clients
        except EmbeddedServerError as exc:
            raise BatchStopped(str(exc)) from exc


def check_options(opts: BatchOptions) -> BatchOptions:
    """The options with metrics normalized, after every check that needs no server; BatchStopped says what to fix."""
    if not opts.input.is_file():
        what = ("is a directory" if opts.input.is_dir() else "does not exist" if not opts.input.exists() else
                "is not a regular file (a pipe or a device): give a file (batch reads it once to count and check the "
                "rows, then again as they are sent; .gz files are read as they are)")
        raise BatchStopped(f"input {opts.input} {what}")
    check_output_path(opts.output)
    for option, path in (("--output", opts.output), *(("--export", p) for p in opts.export)):
        if same_file(path, opts.input):
            raise BatchStopped(f"{option} {path} is the input file: give another file (nothing was written)")
    for path in opts.export:
        if same_file(path, opts.output):
            raise BatchStopped(f"--export {path} is the --output journal: give another file (nothing was written)")
        check_export_path(path)
    if opts.concurrency < 1:
        raise BatchStopped(f"concurrency must be at least 1, not {opts.concurrency}")
    try:
        metrics = parse_metrics(opts.metrics)
        for path in opts.export:
            export_format(path)
        check_input(opts.input, opts.input_format)
    except ValueError as exc:
        raise BatchStopped(str(exc)) from None
    return replace(opts, metrics=metrics)


def _fields_of(opts: BatchOptions) -> str:
    """" (its first row's fields: a, b, c)" for a message about rows that lack a field; "" when it has none."""
    rows = read_rows(opts.input, opts.input_format)
    try:
        for _, row in rows:
            if isinstance(row, dict) and row:
                names = [printable(str(name)) for name in row]
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                return f" (its first row's fields: {shown})"
    finally:
        rows.close()
    return ""


def check_export_path(path: Path) -> None:
    """BatchStopped when an --export file could not be written at the end of the run (checked before it)."""
    path = Path(path)
    if path.is_dir():
        raise BatchStopped(f"--export {path} is a directory: give a .csv or .parquet file")
    parent = path.absolute().parent
    while not parent.exists():  # the export creates missing directories
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BatchStopped(f"--export {path}: cannot write in {parent} (nothing was written)")


async def run_batch(opts: BatchOptions, settings=None, summary: BatchSummary | None = None) -> BatchSummary:
    """Scores every row not yet in the journal; rows that fail get an error status, the run goes on.

    BatchStopped before anything is written when the options, the input file or a server cannot work (a journal
    that would stay empty is removed), and when the first results all fail alike (see STOP_CODES). `summary`
    is filled in as rows are written, so a caller still has the counts of an interrupted run."""
    opts = check_options(opts)
    summary = summary if summary is not None else BatchSummary()
    journal = Journal(opts.output, opts.fsync_interval_s)
    resumed = (set(journal.done), set(journal.failed))
    bar = rows = writer = None
    completed = False
    try:
        # Two passes over the input: the first only counts (and checks every row can be read) before anything is
        # sent; the second reads the rows again as they are sent, so no more than those in flight are held.
        census = _Census()
        try:
            for _, planned in plan_items(opts, journal, summary, resumed):
                census.add(planned)
        except InputError as exc:
            raise BatchStopped(str(exc)) from None
        if summary.skipped:  # (a rerun with another --judge or --top-k into the same --output changed nothing)
            errors = (f"; {summary.skipped_errors} of those records are errors: run again with --retry-errors to "
                      "score those rows again" if summary.skipped_errors else "")
            print(printable(f"resuming {opts.output}: {summary.skipped} rows already have a record there and keep it; "
                            "they are not scored again, whatever the scoring options: give another --output to "
                            f"score them with other options{errors}"), file=sys.stderr)
        if census.letter_targets:  # (the server scores the letter itself, whatever the option says)
            print(f"note: {census.letter_targets} of the rows to score answer with an option letter ('B') but have "
                  "no 'choices': their InfoGain targets the letter itself; give each row its options as 'choices'",
                  file=sys.stderr)
        if summary.total and census.missing_id == summary.total:  # (a dataset as downloaded: MedQA's realidx)
            raise BatchStopped(f"none of the {summary.total} rows in {opts.input} has an 'id'{_fields_of(opts)}: "
                               "give each row its own 'id' (a string or a whole number); nothing was written")
        if summary.total and census.invalid_id and census.missing_id + census.invalid_id == summary.total:
            # (a Parquet or pandas id column with a gap, read as floats: every id 1.0, 2.0, ...; one record each, and
            # after the fix, those records stayed beside the rows' own)
            raise BatchStopped(f"none of the {summary.total} rows in {opts.input} has a usable 'id' "
                               f"({census.invalid_id} invalid, {census.missing_id} missing); the first: "
                               f"{census.invalid_id_message}; nothing was written")
        if census.items and not census.chains:  # (e.g. the chains under another name: 'cot', 'rationale')
            raise BatchStopped(f"none of the {census.items} rows to score in {opts.input} has a reasoning chain: "
                               "give each row's chain as 'reasoning' (text) or 'steps' (a list of strings); "
                               "nothing was sent")
        if census.items and not census.questions and "infogain" in opts.metrics:  # (e.g. under 'problem')
            if "ki" not in opts.metrics:
                raise BatchStopped(f"none of the {census.items} rows to score in {opts.input} has a 'question'"
                                   f"{_fields_of(opts)}, and InfoGain needs it (L_0 is the answer given the question "
                                   "alone): give each row its question as 'question'; nothing was sent")
            print(printable(f"note: none of the {census.items} rows to score in {opts.input} has a 'question'"
                            f"{_fields_of(opts)}: InfoGain needs it, so they get KI only (info_gain null, "
                            "info_gain_null_reason says why); give each row its question as 'question'"),
                  file=sys.stderr)
        async with _ready_clients(opts, census, settings) as clients:
            desc = f"scoring (resumed: {summary.skipped} rows already done)" if summary.skipped else "scoring"
            bar = progress_bar(total=summary.skipped + census.planned, initial=summary.skipped, unit="chain",
                               desc=desc, disable=not opts.progress)
            writer = _Writer(journal, summary, opts.keep_order, bar=bar,
                             limit=max(REORDER_LIMIT, 4 * opts.concurrency))
            rows = plan_items(opts, journal, BatchSummary(), resumed)
            items = _items_to_send(rows, writer, clients)
            try:
                if census.items:
                    await _Scheduler(opts, items, writer, census.items,
                                     kb_not_loaded=census.kb_rows if census.kb_not_loaded else 0).run(clients)
                else:
                    for _ in items:
                        pass
            except InputError as exc:  # the input changed or was cut short since the first pass
                raise BatchError(f"{exc}; {summary.progress(opts.output)}") from None
        completed = True
    finally:
        if writer is not None:  # (the scheduler wrote them already, unless it was cut short itself)
            writer.flush()
        if rows is not None:
            rows.close()
        if bar is not None:
            bar.close()
        journal.close(discard_if_empty=not completed)
    for number, path in enumerate(opts.export):
        try:
            export_journal(opts.output, path)
        except OSError as exc:  # (a full disk, a file size limit: the export is written whole or not at all)
            before = f" ({', '.join(map(str, opts.export[:number]))} written)" if number else ""
            raise BatchError(f"cannot write --export {path} ({exc.strerror or exc}): nothing of it was written"
                             f"{before}; the journal {opts.output} is complete: run the same command again to "
                             "export it (no row is scored again)") from None
    return summary
