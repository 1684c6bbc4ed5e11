"""`kgverify kb build|add|info|search|verify|reload`: the knowledge-base commands."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from kb.layout import current_name
from server.pipeline.types import RetrievalMode

DEFAULT_MODE = "hybrid"  # the best mode measured on MedQuAD (docs/knowledge_base.md)


def _add_input_options(cmd) -> None:
    cmd.add_argument("--input", nargs="+", required=True, type=Path,
                     help="JSONL(.gz), CSV/TSV(.gz), Parquet or text files, or directories of them")
    cmd.add_argument("--text-field", default="text", help="field or column holding the document text")
    cmd.add_argument("--id-field", default="id", help="document id (need not be unique; default: file:line)")
    cmd.add_argument("--source-field", default="source", help="source note or URL of the document")
    cmd.add_argument("--title-field", default="title", help="document title (stored, not embedded)")
    cmd.add_argument("--embedder", default=None, help="embedding model name or local path (default: KGV_EMBEDDER__MODEL)")
    cmd.add_argument("--keep-versions", type=int, default=2,
                     help="published versions kept on disk (at least 1; keep 2 or more for a KB a server reloads)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar (stage lines are still printed)")


def add_parser(subparsers) -> None:
    from client.security import add_security_options

    kb = subparsers.add_parser("kb", help="build, extend, inspect, verify and search knowledge bases")
    sub = kb.add_subparsers(dest="kb_command", required=True)

    build = sub.add_parser("build", help="build a KB directory from documents (a new version, published atomically)")
    _add_input_options(build)
    build.add_argument("--output", required=True, type=Path, help="KB directory (created, or given a new version)")
    build.add_argument("--chunk-chars", type=int, default=500, help="longest fact in characters")
    build.add_argument("--chunk-overlap", type=int, default=0, help="sentences shared by consecutive facts")
    build.add_argument("--context-chars", type=int, default=200,
                       help="prepend up to this many characters of the source's first sentence (the first "
                            "document with the same id and source) to every fact when embedding and "
                            "BM25-indexing it; stored facts stay verbatim (0 = off: one vector per fact)")
    build.add_argument("--index", choices=["auto", "flat", "hnsw", "ivfpq"], default="auto",
                       help="index family (auto: flat up to 200k facts, HNSW up to 4M, IVF-PQ beyond)")
    build.add_argument("--index-param", action="append", default=[], metavar="NAME=VALUE",
                       help="index parameter, e.g. M=32, efSearch=128, nlist=1024, m=48, nprobe=64, refine_k=400")
    build.add_argument("--no-bm25", action="store_true", help="skip the BM25 index (dense retrieval only)")
    build.set_defaults(func=_build)

    add = sub.add_parser("add", help="append documents to a KB (only their new facts are embedded)")
    add.add_argument("directory", type=Path)
    _add_input_options(add)
    add.set_defaults(func=_add)

    info = sub.add_parser("info", help="print the manifest of a KB's current version")
    info.add_argument("directory", type=Path)
    info.set_defaults(func=_info)

    verify = sub.add_parser("verify", help="check every file of the current version against its sha256")
    verify.add_argument("directory", type=Path)
    verify.set_defaults(func=_verify)

    search = sub.add_parser("search", help="search a KB")
    search.add_argument("directory", type=Path)
    search.add_argument("query")
    search.add_argument("-k", type=int, default=None,
                        help="facts to return (at least 1; default: KGV_KB__TOP_K, 5)")
    search.add_argument("--mode", choices=[m.value for m in RetrievalMode], default=None,
                        help=f"retrieval mode (default: KGV_KB__RETRIEVAL_MODE, {DEFAULT_MODE}; dense for a KB built "
                             "without BM25)")
    search.add_argument("--embedder", default=None,
                        help="embedding model name or local path (default: the one the KB's manifest names)")
    search.add_argument("--json", action="store_true", help="print a JSON list")
    search.set_defaults(func=_search)

    reload = sub.add_parser("reload", help="make a running server load its KB's current version (no restart)")
    from client.cli import server_address

    reload.add_argument("--server", required=True, type=server_address,
                        help="verifier address (host:port or unix:///path)")
    reload.add_argument("--timeout-s", type=float, default=600.0, help="how long the load may take")
    add_security_options(reload)
    reload.set_defaults(func=_reload)


def _embedder(name: str | None):
    from kb.embedder import SentenceTransformerEmbedder
    from server.config import load_settings

    cfg = load_settings().embedder
    return SentenceTransformerEmbedder(name or cfg.model, cfg.device, cfg.batch_size)


def _documents(args: argparse.Namespace, output: Path):
    from kb.ingest import DocumentReader, FieldMap

    fields = FieldMap(args.text_field, args.id_field, args.source_field, args.title_field)
    # counts its rows (the progress bar gets a total); never reads the KB being written, should it be inside an input
    return DocumentReader(args.input, fields, exclude=[output])


def _fields_note(args: argparse.Namespace, output: Path) -> str:
    """" (--text-field 'text'; the first row of FILE has the fields a, b, c)" for inputs without document text: the
    field to map is often just named otherwise (MedQuAD's 'answer', PubMedQA's 'CONTEXTS'); "" when not found."""
    import csv
    import gzip

    try:
        path, fmt = next(iter(_documents(args, output)._inputs()))
        if fmt == "parquet":
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        elif fmt in ("jsonl", "csv"):
            opener = gzip.open if path.name.lower().endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
                if fmt == "csv":
                    tsv = path.name.lower().removesuffix(".gz").endswith(".tsv")
                    names = next(csv.reader(fh, delimiter="\t" if tsv else ","))
                else:
                    row = json.loads(next(line for line in fh if line.strip()))
                    names = list(row) if isinstance(row, dict) else []
        else:
            return ""
    except Exception:  # (noqa: BLE001) only a hint: the error stands without it
        return ""
    if not names:
        return ""
    shown = ", ".join(str(n) for n in names[:15]) + (", ..." if len(names) > 15 else "")
    return f"; --text-field is {args.text_field!r}, and the first row of {path} has the fields: {shown}"


def _no_text_hint(args: argparse.Namespace, output: Path, exc: ValueError) -> ValueError:
    from kb.build import NO_TEXT

    if str(exc) != NO_TEXT:
        return exc
    return ValueError(NO_TEXT + _fields_note(args, output))


def _index_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ValueError(f"--index-param {item!r} is not NAME=INTEGER")
        params[name.strip()] = int(value)
    return params


@contextmanager
def sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the block runs in the main thread: a command that
    cleans up or reports on Ctrl-C does the same when it is terminated (by a supervisor, a job timeout, `kill`)."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (and only it gets signals): e.g. main() run in a thread
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _writing(directory: Path):
    """A KB write that SIGTERM (like Ctrl-C) interrupts cleanly: its staging is removed, nothing is published,
    and the user is told so (exit status 130). An interrupt after the switch says what was published; an OS
    error (disk full, read-only file system) is one line, status 1."""
    before = current_name(directory)

    def outcome() -> str:
        now = current_name(directory)
        if now != before:
            return f"{now} was published in {directory} (removing older versions may not have finished)"
        return f"{directory} is as it was (nothing was published)"

    import sqlite3

    try:
        with sigterm_interrupts():
            yield
    except KeyboardInterrupt:
        print(f"kgverify kb: interrupted; {outcome()}", file=sys.stderr)
        raise
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and not str(exc.filename or "").startswith(str(directory)):
            raise  # an input that does not exist: status 2
        print(f"kgverify kb: error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}; "
              f"{outcome()}", file=sys.stderr)
        raise _Reported(1) from exc
    except sqlite3.Error as exc:  # the fact store: "database or disk is full", "attempt to write a readonly database"
        print(f"kgverify kb: error: {exc} (fact store); {outcome()}", file=sys.stderr)
        raise _Reported(1) from exc


class _Reported(Exception):
    """An error already explained on stderr; ends the command with this exit status."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status




def _check_inputs(args: argparse.Namespace) -> None:
    """Inputs that do not exist, or that are pipes or devices (read twice, they cannot be), named before the
    embedder loads (seconds) and the progress bar starts."""
    from kb.build import _check_keep
    from kb.ingest import check_input_path

    for path in args.input:
        check_input_path(Path(path))
    _check_keep(args.keep_versions)


def _checked_documents(args: argparse.Namespace, output: Path):
    """The documents reader, every input row read and checked once (JSON, CSV quoting, text field types, UTF-8, a
    truncated .gz...) and found to hold some document text: bad input fails before the embedding model is loaded,
    not after everything before the bad row was embedded. The count gives the progress bar its total."""
    from kb.build import NO_TEXT

    docs = _documents(args, output)
    print("kgverify kb: reading and checking the inputs", file=sys.stderr, flush=True)
    if docs.check().documents == 0:
        raise ValueError(NO_TEXT)
    return docs


def _chunk_spec(args: argparse.Namespace):
    from kb.chunking import ChunkSpec

    for option, value, least in (("--chunk-chars", args.chunk_chars, 1), ("--chunk-overlap", args.chunk_overlap, 0),
                                 ("--context-chars", args.context_chars, 0)):
        if value < least:
            raise ValueError(f"{option} must be at least {least}, got {value}")
    return ChunkSpec(args.chunk_chars, args.chunk_overlap, args.context_chars)


def _build(args: argparse.Namespace) -> int:
    from kb.build import BuildOptions, build_kb
    from kb.index import check_overrides
    from kb.layout import check_output_dir

    # options and inputs first: loading the embedding model takes seconds
    _check_inputs(args)
    spec = _chunk_spec(args)
    options = BuildOptions(index=args.index, index_params=_index_params(args.index_param), bm25=not args.no_bm25,
                           keep_versions=args.keep_versions)
    check_overrides(options.index, options.index_params)  # what needs the model's dimension: once it is loaded
    check_output_dir(args.output.resolve())
    try:
        with _writing(args.output):
            docs = _checked_documents(args, args.output)
            manifest = build_kb(docs, args.output, _embedder(args.embedder), chunking=spec,
                                options=options, build_options={"inputs": [str(p) for p in args.input]},
                                progress=not args.no_progress, stages=True)
    except ValueError as exc:
        raise _no_text_hint(args, args.output, exc) from None
    print(json.dumps(_summary(manifest, args.output)))
    return 0


def _add(args: argparse.Namespace) -> int:
    from kb.build import add_documents
    from kb.layout import current_version
    from kb.manifest import Manifest

    _check_inputs(args)
    recorded = Manifest.load(current_version(args.directory)).embedder
    outcome: dict = {}
    try:
        with _writing(args.directory):
            docs = _checked_documents(args, args.directory)
            manifest = add_documents(args.directory, docs, _embedder(args.embedder or recorded),
                                     keep_versions=args.keep_versions,
                                     build_options={"inputs": [str(p) for p in args.input]},
                                     progress=not args.no_progress, stages=True, outcome=outcome)
    except ValueError as exc:
        raise _no_text_hint(args, args.directory, exc) from None
    print(json.dumps(_summary(manifest, args.directory, outcome or None)))
    return 0


RUN_FIELDS = ("facts_added", "duplicates_dropped", "embedded", "reused", "seconds", "embeddings_per_s")


def _summary(manifest, directory: Path, run: dict | None = None) -> dict:
    """The KB's totals (facts, documents, bytes) and this run's counts: from the version it published, or from
    `run` when it published none (an add with nothing new must not repeat the previous run's counts)."""
    this_run = run if run is not None else manifest.build
    return {"kb_id": manifest.kb_id, "version": manifest.version, "path": str(directory),
            "facts": manifest.num_facts, "documents": manifest.num_documents, "index": manifest.index["family"],
            **{k: this_run.get(k) for k in RUN_FIELDS}, **({"unchanged": True} if run and run.get("unchanged") else {}),
            "bytes": manifest.total_bytes()}


def _info(args: argparse.Namespace) -> int:
    from kb.layout import current_version
    from kb.manifest import Manifest

    manifest = Manifest.load(current_version(args.directory))
    data = json.loads(manifest.to_json())
    data["checksum"] = manifest.checksum()
    data["bytes"] = manifest.total_bytes()
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from kb.layout import current_version
    from kb.manifest import Manifest

    version = current_version(args.directory)
    manifest = Manifest.load(version)
    manifest.verify_files(version, "full")
    print(json.dumps({"kb_id": manifest.kb_id, "version": version.name, "files": len(manifest.files),
                      "bytes": manifest.total_bytes(), "ok": True}))
    return 0


def _search(args: argparse.Namespace) -> int:
    """Searches as the server would: its KGV_KB__* settings (hits per document, fusion, candidates, index search
    parameters, verification, mmap; default mode and top k) decide what comes back."""
    from kb.knowledge_base import FaissKnowledgeBase, LoadOptions
    from kb.layout import current_version
    from kb.manifest import Manifest

    from server.config import load_settings
    from server.pipeline.validation import has_visible_content

    if args.k is not None and args.k < 0:
        raise ValueError(f"-k must not be negative, got {args.k}")
    if args.k == 0:  # (printed nothing and exited 0, as if the KB held nothing on the query)
        raise ValueError("-k 0 asks for no facts: give at least 1 (facts to return)")
    if not has_visible_content(args.query):
        raise ValueError("the query is empty (it has no visible characters)")  # as the server refuses it
    settings = load_settings().kb
    k = args.k if args.k is not None else settings.top_k
    manifest = Manifest.load(current_version(args.directory))
    kb = FaissKnowledgeBase.load(args.directory, _embedder(args.embedder or manifest.embedder),
                                 LoadOptions.from_settings(settings))
    mode = RetrievalMode(args.mode or settings.retrieval_mode)
    if args.mode is None and mode not in kb.info.modes:
        mode = RetrievalMode.DENSE
    hits = kb.search([args.query], k, mode)[0]
    rows = [{"fact_id": h.fact_id, "text": h.text, "source": h.source, "title": h.title, "score": h.score}
            for h in hits]
    if len(rows) < k:
        print(f"kgverify kb: note: {_short_note(kb, mode, len(rows), k)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    else:
        from client.render import printable

        for rank, row in enumerate(rows, 1):
            # fused (hybrid) scores are small and close together: four significant digits tell neighbours apart
            score = f"{row['score']:.4g}" if mode is RetrievalMode.HYBRID else f"{row['score']:.3f}"
            print(f"{rank:2d}. [{score}] {printable(row['fact_id'])}: {printable(row['text'])}")
    return 0


def _short_note(kb, mode: RetrievalMode, found: int, k: int) -> str:
    """Why a search answered fewer than k facts, as far as is known."""
    cap = kb.options.max_per_document
    facts, documents = kb.manifest.num_facts, kb.manifest.num_documents
    head = f"{found} of {k} facts" if found else "no facts"
    per_doc = (f"at most {cap} fact{'s' if cap != 1 else ''} per document (KGV_KB__MAX_PER_DOCUMENT={cap}; 0 = no "
               "limit)")
    if mode is RetrievalMode.BM25 and found < min(facts, documents * cap if cap else facts):
        matched = ("no fact shares a word with the query" if not found else
                   "only these facts share a word with the query")
        return (f"{head}: {matched} (BM25 matches stemmed words, stopwords left out; --mode dense or hybrid finds "
                f"facts by meaning)")
    if found >= facts:
        return f"{head}: the knowledge base holds {facts} fact{'s' if facts != 1 else ''}"
    if cap and found >= documents * cap:
        return (f"{head}: the knowledge base holds {documents} document{'s' if documents != 1 else ''}, and searches "
                f"return {per_doc}")
    return f"{head}: searches return {per_doc}" if cap else head


# A reload the server refused because of the KB itself (damaged, missing, another embedder): status 1, as for a KB
# that cannot be read locally; other refusals (unreachable server, authentication) are status 2.
KB_REFUSALS = ("KB_CORRUPT", "KB_NOT_FOUND", "KB_EMBEDDER_MISMATCH", "SERVICE_LOAD_FAILED")


def _reload(args: argparse.Namespace) -> int:
    from client.errors import VerifierError
    from client.security import client_options
    from client.sync import VerifierClient

    from client.aio import CONNECT_TIMEOUT_S, unreachable_error

    with VerifierClient(args.server, retries=0, **client_options(args)) as client:
        try:  # (health answers without a token) a server that does not answer: said in a few words, status 2
            client.health("", timeout_s=CONNECT_TIMEOUT_S)
        except VerifierError as exc:
            if exc.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                raise
            raise unreachable_error(args.server, exc, CONNECT_TIMEOUT_S) from None
        try:
            previous, current = client.reload_kb(timeout_s=args.timeout_s)
        except VerifierError as exc:
            if exc.reason not in KB_REFUSALS:
                raise
            print(f"kgverify kb: error: the server refused the reload and keeps its knowledge base: {exc}",
                  file=sys.stderr)
            return 1
        info = client.kb_info()
    summary = {"previous_kb_id": previous, "kb_id": current, "num_facts": info.get("num_facts"),
               "path": info.get("path"), "modes": info.get("modes"), "default_mode": info.get("default_mode")}
    default, modes = info.get("default_mode"), info.get("modes") or []
    if default and default not in modes:
        # loaded, but every request that keeps the server's default mode now fails FAILED_PRECONDITION
        summary["warning"] = (f"the knowledge base supports retrieval modes {', '.join(modes)}, not the server's "
                              f"default {default!r} (KGV_KB__RETRIEVAL_MODE): requests that do not choose a mode fail "
                              "RETRIEVAL_MODE_UNAVAILABLE until it is rebuilt with BM25 or the default is set to dense")
        print(f"kgverify kb: warning: {summary['warning']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0


STDOUT_CLOSED = 128 + signal.SIGPIPE  # 141, as a shell reports a command that wrote to a closed pipe


def finish_output(code: int) -> int:
    """Flushes stdout inside the command's error handling: a reader that went away (`| head`) shows up here as
    a BrokenPipeError, not as an "Exception ignored" at interpreter exit."""
    sys.stdout.flush()
    return code


def stdout_closed() -> int:
    """Quietly ends a command whose stdout reader went away: the rest of its output goes to /dev/null (so the
    flush at exit cannot fail again); exit status 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (e.g. captured)
        pass
    return STDOUT_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kb ...`: the same commands without the rest of the kgverify CLI."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="kgverify")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["kb", *(sys.argv[1:] if argv is None else argv)]))


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `kb` command with its exit statuses (docs/knowledge_base.md): 0 done; 2 for inputs that
    cannot be used and bad options; 1 for a KB that cannot be read or extended; 130 interrupted; 141 when the
    reader of stdout went away. `kgverify kb ...` and `python -m kb ...` both end here."""
    from client.errors import VerifierError, refusal_note

    try:
        return finish_output(int(args.func(args) or 0))
    except BrokenPipeError:
        return stdout_closed()
    except KeyboardInterrupt:
        return 130
    except _Reported as exc:
        return exc.status
    except (ValueError, FileNotFoundError, VerifierError) as exc:
        print(f"kgverify kb: error: {exc}{refusal_note(exc, bool(getattr(args, 'token_file', None)))}",
              file=sys.stderr)
        return 2
    except Exception as exc:
        from server.pipeline.errors import KgverifyError

        if isinstance(exc, KgverifyError):
            print(f"kgverify kb: error: {exc.message}", file=sys.stderr)
            return 1
        raise
