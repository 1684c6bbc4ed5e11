"""The `kgverify` command: serve, split, evaluate, batch, demo, kb, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence


def _settings(**overrides):
    from server.config import load_settings

    return load_settings(**{k: v for k, v in overrides.items() if v})


EVALUATE_READY_TIMEOUT_S = 300.0  # evaluate and demo: how long a reachable server may take to load what they need


def _add_server_options(parser: argparse.ArgumentParser, repeat: bool = False,
                        help_text: str = "verifier address (host:port or unix:///path); default: start an embedded "
                                         "server") -> None:
    from .security import add_security_options

    if repeat:
        parser.add_argument("--server", action="append", default=[], type=server_address,
                            help=help_text + "; repeat to balance")
    else:
        parser.add_argument("--server", default=None, type=server_address, help=help_text)
    add_security_options(parser)


def server_address(value: str) -> str:
    """A --server address as gRPC takes it; a URL scheme (http://, grpc://) is a usage error, since gRPC read it as
    a host name ("cannot reach ... (host name not found)")."""
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme in ("http", "https", "grpc", "grpcs"):
        rest = value.split("://", 1)[1].rstrip("/")
        raise argparse.ArgumentTypeError(f"{value!r} is a URL: give host:port (e.g. {rest or '127.0.0.1:50051'}) or "
                                         "unix:///path, without a scheme (--tls-ca for TLS)")
    return value


def _ready_text(timeout_s: float, what: str) -> str:
    """The wait limits of a command that scores on --server, for its --help."""
    from .aio import CONNECT_TIMEOUT_S

    return (f"With --server, it waits up to {CONNECT_TIMEOUT_S:g} s for the server to answer, then up to "
            f"{timeout_s:g} s for the services {what} to become ready (the knowledge service for KI, the InfoGain "
            "service for InfoGain, the knowledge base service for KI without context passages), and no longer "
            "for the others; a service that failed to load stops it at once.")


def _add_scoring_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring options (default: the server's settings)")
    group.add_argument("--judge", choices=["baseline", "nli", "vllm", "cascade"])
    group.add_argument("--top-k", type=_non_negative_int, default=0,
                       help="facts retrieved per claim (0 = the server's default)")
    group.add_argument("--retrieval-mode", choices=["dense", "bm25", "hybrid"])
    group.add_argument("--splitter", choices=["rules", "llm"],
                       help="how free-text reasoning is split into steps, for both metrics")
    group.add_argument("--estimator", choices=["lm", "nli"], help="InfoGain estimator")
    group.add_argument("--paper", action="store_true",
                       help="also compute the paper's InfoGain formula (needs a causal LM: --estimator lm)")
    group.add_argument("--units", choices=["nats", "bits"])
    group.add_argument("--window", type=_non_negative_int, default=0, help="InfoGain window W (0 = full prefixes)")


def _metrics(value: str) -> tuple[str, ...]:
    from .batch import parse_metrics

    try:
        return parse_metrics(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None


def _positive_int(value: str) -> int:
    number = _whole_number(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _non_negative_int(value: str) -> int:
    """A count where 0 means the server's default (--top-k, --window): refused here, before any model loads or
    any row is sent (a negative one made every row of a batch an INVALID_ARGUMENT record)."""
    number = _whole_number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (the server's default) or more, not {number}")
    return number


def _non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, 0 or more, not {value}")
    return number


def _file_path(value: str) -> Path:
    """A file to write. argparse's Path drops a trailing separator, so `--output results/` wrote a file named
    `results` where a directory was meant."""
    if value.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{value} ends with a separator, so it names a directory: give a file in it")
    return Path(value)


def _export_path(value: str) -> Path:
    from .batch_io import export_format

    _file_path(value)
    try:
        export_format(Path(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return Path(value)


def _knowledge_kwargs(args) -> dict:
    return {"top_k": args.top_k, "judge": args.judge, "retrieval_mode": args.retrieval_mode,
            "splitter": args.splitter}


def _info_gain_kwargs(args) -> dict:
    return {"estimator": args.estimator, "mode": "paper" if args.paper else None, "units": args.units,
            "window": args.window, "splitter": args.splitter}


def _embedded_settings(args):
    """The embedded verifier's settings: the environment's, with --kb as its knowledge base; None when --kb is not
    given. --kb with --server, or naming no directory, is a usage error (exit status 2) before any model loads."""
    kb = getattr(args, "kb", None)
    if kb is None:
        return None
    if getattr(args, "server", None):
        args.parser.error(f"--kb is the knowledge base of the embedded verifier; the server at --server uses its own "
                          f"(start it with kgverify serve --kb {kb})")
    if not kb.is_dir():
        what = "is not a directory" if kb.exists() else "does not exist"
        args.parser.error(f"--kb {kb} {what}: give a knowledge base directory (kgverify kb build --output DIR)")
    return _settings(kb={"path": kb})


def _add_kb_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kb", type=Path, metavar="DIR",
                        help="knowledge base of the embedded verifier (without --server; default: KGV_KB__PATH, "
                             "else the bundled demo KB of a few hundred facts)")


async def _with_server(address: str | None, job, required: tuple[str, ...] | None = None, settings=None,
                       uses_kb: bool = True):
    if address:
        return await job(address)
    from .embedded import embedded_server

    async with embedded_server(settings, required=required, uses_kb=uses_kb) as embedded:
        return await job(embedded)


def _cmd_serve(args) -> int:
    from server.app import serve
    from server.context import configure_logging

    if args.kb is not None and not args.kb.is_dir():  # (else the server came up without a KB, saying so in its log)
        what = "is not a directory" if args.kb.exists() else "does not exist"
        args.parser.error(f"--kb {args.kb} {what}: give a knowledge base directory (kgverify kb build --output DIR)")
    if args.kb is not None and args.no_kb:
        args.parser.error("--kb and --no-kb contradict each other: give one")
    kb = {"enabled": False} if args.no_kb else ({"path": args.kb} if args.kb else {})
    settings = _settings(kb=kb)
    configure_logging(settings.server.log_level)
    asyncio.run(serve(settings, args.listen or None))
    return 0


def _cmd_split(args) -> int:
    if args.splitter == "llm" and not args.server:
        args.parser.error("--splitter llm needs --server (a server with the LLM decomposer: KGV_SPLITTER__BASE_URL); "
                          "without --server the rule splitter runs here")
    text = args.text if args.text is not None else sys.stdin.read()
    if not args.server:
        from server.pipeline.validation import empty_description, has_visible_content

        from .errors import VerifierError

        if not has_visible_content(text):  # what a server answers (status 2 either way)
            why = (f"{empty_description(text)}: the chain is empty" if text.strip()
                   else "the chain is empty: send reasoning text or steps")
            raise VerifierError("INVALID_ARGUMENT", "INVALID_ARGUMENT", f"invalid request: reasoning: {why}",
                                field_violations=[("reasoning", why)])
    if args.server:
        from .security import client_options
        from .sync import VerifierClient

        from .aio import CONNECT_TIMEOUT_S, KNOWLEDGE_SERVICE

        with VerifierClient(args.server, **client_options(args)) as client:
            # as evaluate: a server that does not answer is named at once, one still loading is waited for
            client.wait_ready(KNOWLEDGE_SERVICE, EVALUATE_READY_TIMEOUT_S, connect_timeout_s=CONNECT_TIMEOUT_S,
                              on_waiting=lambda message: print(message, file=sys.stderr), serving=False)
            result = client.split(text, question=args.question, splitter=args.splitter)
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        return 0
    from server.pipeline.splitter import RuleSplitter

    from .types import SplitClaim, SplitResult, SplitStep

    result = RuleSplitter().split(text, args.question)
    local = SplitResult(tuple(SplitStep(s.index, s.text, s.start, s.end, s.no_knowledge,
                                        tuple(SplitClaim(c.text, c.start, c.end, c.no_knowledge) for c in s.claims),
                                        s.planning, s.knowledge) for s in result.steps),
                        result.chain_text, result.splitter)
    print(json.dumps(local.to_dict(), ensure_ascii=False))  # the same JSON as a server's split
    return 0


def read_text_file(path: Path, option: str) -> str:
    """A UTF-8 text file named by an option; ValueError (exit status 2, one line) naming the option and the file
    when it is a directory, cannot be read or is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise ValueError(f"{option} {path} is a directory: give a file") from None
    except OSError as exc:
        raise ValueError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{option} {path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it "
                         "as UTF-8") from None


def _read_steps(path: Path, option: str = "--steps-file") -> list[str]:
    """The items of a file of steps or passages; ValueError (exit status 2, before any model loads) for a file
    that holds none: an empty --steps-file was sent to the server as an empty chain, and an empty --context-file
    was dropped, so the chain was judged against the knowledge base without a word."""
    text = read_text_file(path, option)
    what = "steps" if option == "--steps-file" else "passages"
    if path.suffix == ".json":
        try:
            steps = json.loads(text)
        except (ValueError, RecursionError):
            steps = None
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise ValueError(f"{option} {path}: expected a JSON list of strings")
        if not any(s.strip() for s in steps):
            raise ValueError(f"{option} {path} holds no {what}: give a JSON list of non-empty strings")
        return steps
    # Lines end at \n (a \r before it is dropped), not at every break str.splitlines knows: a U+2028 or form feed
    # inside a step copied from model output split it in two.
    lines = text.split("\n") if "\n" in text else text.split("\r")  # (a file of bare \r line ends: classic Mac)
    items = [line.removesuffix("\r") for line in lines if line.strip()]
    if not items:
        raise ValueError(f"{option} {path} holds no {what}: give one per line (or a .json file holding a list)")
    return items


def _cmd_evaluate(args) -> int:
    from . import requests
    from .aio import AsyncVerifierClient
    from .readiness import retry_not_ready, scoring_services, uses_knowledge_base, wait_until_ready
    from .render import render_chain
    from .security import client_options

    row = {"question": args.question, "answer": args.answer or "", "gold_answer": args.gold_answer or ""}
    if (args.reasoning is None) == (args.steps_file is None):
        args.parser.error("give exactly one of --reasoning and --steps-file")  # a usage error: exit status 2
    if args.reasoning is not None:
        row["reasoning"] = args.reasoning
    else:
        row["steps"] = _read_steps(args.steps_file)
    if args.context_file:
        row["context"] = _read_steps(args.context_file, "--context-file")
    if args.choice:
        row["choices"] = args.choice
    metrics = args.metrics
    target = "gold_answer" if row["gold_answer"].strip() else "answer"
    if ("infogain" in metrics and not args.choice
            and re.fullmatch(r"\(?[A-Za-z]\)?[.):]?", row[target].strip())):
        # (the server scores the letter itself: the likelihood of the text "B", whatever option B says)
        print(f"--{target.replace('_', '-')} {row[target].strip()!r} names an option by its letter, but no --choice "
              "was given: InfoGain targets the text itself; give the options with --choice, in order",
              file=sys.stderr)
    if not (row["answer"] or row["gold_answer"]) and "infogain" in metrics:
        metrics = tuple(m for m in metrics if m != "infogain")
        if not metrics:
            args.parser.error("InfoGain needs a target: give --answer or --gold-answer (or --metrics ki)")
        print("no --answer or --gold-answer: scoring KI only", file=sys.stderr)

    kwargs = {"metrics": metrics, **row, **_knowledge_kwargs(args), **_info_gain_kwargs(args)}
    request = requests.score_chain_request(kwargs)  # what the server needs for it (a bad option: exit status 2)
    security = client_options(args)
    settings = _embedded_settings(args)

    async def job(address: str):
        async with AsyncVerifierClient(address, **security) as client:
            deadline = time.monotonic() + EVALUATE_READY_TIMEOUT_S
            say = lambda message: print(message, file=sys.stderr)  # noqa: E731
            await wait_until_ready(client, [request], EVALUATE_READY_TIMEOUT_S, on_waiting=say)
            return await retry_not_ready(client, [request], deadline, lambda: client.score_chain(**kwargs), say)

    score = _run_interruptible(_with_server(args.server, job, required=scoring_services([request]),
                                            settings=settings, uses_kb=uses_knowledge_base(request)))
    if args.json:
        print(json.dumps(score.to_record(args.id), ensure_ascii=False, allow_nan=False))
    else:
        print(render_chain(score, args.question))
    return 0


def _run_interruptible(coro):
    """asyncio.run(coro), where SIGTERM interrupts as Ctrl-C does: the task is cancelled, so its cleanup runs
    (journal synced and closed, embedded server stopped), then KeyboardInterrupt is raised.

    Unlike kb's sigterm_interrupts, the signal is taken by the event loop: an exception raised from a plain
    signal handler could land inside gRPC or a model call running on the loop's thread."""
    terminated: list[bool] = []

    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        handled = threading.current_thread() is threading.main_thread()  # only it gets signals

        def on_sigterm():
            terminated.append(True)
            task.cancel()

        if handled:
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await coro
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt("SIGTERM") from None
        raise


def _cmd_batch(args) -> int:
    from .batch import BatchError, BatchOptions, BatchSummary, run_batch
    from .security import channel_security_of

    summary = BatchSummary()
    credentials, metadata = channel_security_of(args)  # a bad option: ValueError, exit status 2
    settings = _embedded_settings(args)
    try:
        opts = BatchOptions(
            input=args.input, output=args.output, servers=args.server, concurrency=args.concurrency,
            metrics=args.metrics, keep_order=args.keep_order,
            progress=not args.no_progress, knowledge=_knowledge_kwargs(args), info_gain=_info_gain_kwargs(args),
            input_format=args.input_format, export=args.export, fsync_interval_s=args.fsync_interval,
            credentials=credentials, metadata=metadata, retry_errors=args.retry_errors,
            evidence_text=args.evidence_text, stall_timeout_s=args.stall_timeout)
        _run_interruptible(run_batch(opts, settings, summary=summary))  # SIGTERM: reported and exits like Ctrl-C (130)
    except BatchError as exc:
        print(f"batch failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"interrupted: {summary.progress(args.output)}", file=sys.stderr)
        return 130
    for path in args.export:  # (as report names each file it writes; the summary stays the last line)
        print(f"wrote {path}", file=sys.stderr)
    print(json.dumps({"rows": summary.total, "skipped_already_done": summary.skipped,
                      "retried_errors": summary.retried, "written": summary.written,
                      "ki_only_no_answer": summary.ki_only, "ki_only_no_question": summary.ki_only_no_question,
                      "statuses": summary.statuses,
                      "output": str(args.output)}), file=sys.stderr)
    return 0


def _cmd_report(args) -> int:
    from .report import ReportError, ReportOptions, render_text, run_report

    opts = ReportOptions(inputs=args.inputs, by=args.by, baseline=args.baseline, html=args.html,
                         plots_dir=args.plots_dir, json_out=args.json, samples=args.bootstrap, seed=args.seed)
    try:
        report = run_report(opts)
    except ReportError as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return exc.exit_code
    print(render_text(report))
    for name, path in report["written"].items():
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_demo(args) -> int:
    from .demo import DEMO_CHAINS, load_chains, run_demo

    from .security import client_options

    chains = load_chains(args.chains or DEMO_CHAINS)
    security = client_options(args)
    settings = _embedded_settings(args)
    # uses_kb=False: the demo's report names the knowledge base itself (stdout), the embedded verifier's note would
    # say it again on stderr
    _run_interruptible(_with_server(args.server, lambda address: run_demo(
        address, chains, ready_timeout_s=EVALUATE_READY_TIMEOUT_S, **security), settings=settings, uses_kb=False))
    return 0


def _cmd_config(args) -> int:
    from server.config import settings_table

    if args.table:
        print(settings_table())
    else:
        print(_settings().model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .aio import CONNECT_TIMEOUT_S

    from server import __version__

    parser = argparse.ArgumentParser(prog="kgverify", description="Knowledge-grounded verifier for LLM reasoning.")
    parser.add_argument("--version", action="version", version=f"kgverify {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--listen", action="append", help="host:port or unix:///path (repeatable)")
    serve.add_argument("--kb", type=Path, help="knowledge base directory (default: KGV_KB__PATH or the demo KB)")
    serve.add_argument("--no-kb", action="store_true", help="serve without a knowledge base (context-only KI)")
    serve.set_defaults(func=_cmd_serve, parser=serve)

    split = sub.add_parser("split", help="split a reasoning chain into steps and claims (JSON)",
                           description="Split a reasoning chain into steps and claims (JSON), locally or with "
                           f"--server; there it waits up to {CONNECT_TIMEOUT_S:g} s for the server to answer, then up "
                           f"to {EVALUATE_READY_TIMEOUT_S:g} s for its knowledge service to load.")
    split.add_argument("--text", help="the chain (default: read stdin)")
    split.add_argument("--question", default="", help="the question (helps spot restatements)")
    split.add_argument("--splitter", choices=["rules", "llm"],
                       help="rules (default; runs here without --server) or llm (the server's LLM decomposer)")
    _add_server_options(split, help_text="split on a server (host:port or unix:///path) instead of locally")
    split.set_defaults(func=_cmd_split, parser=split)

    evaluate = sub.add_parser("evaluate", help="score one chain and print a per-step table",
                              description="Score one chain and print a per-step table. "
                              + _ready_text(EVALUATE_READY_TIMEOUT_S, "the chain needs"))
    evaluate.add_argument("--question", required=True)
    evaluate.add_argument("--reasoning", help="the chain as free text")
    evaluate.add_argument("--steps-file", type=Path, help="steps: a JSON list of strings, or one step per line")
    evaluate.add_argument("--answer")
    evaluate.add_argument("--gold-answer")
    evaluate.add_argument("--choice", action="append", default=[], metavar="TEXT",
                          help="a multiple-choice option's text, without its letter (repeat in order: A, B, ...); "
                               "InfoGain then reads the options with the question, and an --answer of one letter "
                               "('B') targets that option's text")
    evaluate.add_argument("--context-file", type=Path, help="context passages (JSON list or one per line)")
    evaluate.add_argument("--metrics", type=_metrics, default=("ki", "infogain"),
                          help="ki, infogain or both (comma-separated)")
    evaluate.add_argument("--id", default="chain", help="id in the --json record")
    evaluate.add_argument("--json", action="store_true", help="print the batch output record")
    _add_server_options(evaluate)
    _add_kb_option(evaluate)
    _add_scoring_options(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate, parser=evaluate)

    from .batch import READY_TIMEOUT_S, STALL_TIMEOUT_S

    batch = sub.add_parser("batch", help="score a JSONL, CSV or Parquet dataset into a resumable JSONL journal",
                           description="Score a JSONL, CSV or Parquet dataset into a resumable JSONL journal. "
                           + _ready_text(READY_TIMEOUT_S, "the rows need").replace("the server", "each server"),
                           epilog="Each row (a JSON object per line, or a CSV / Parquet row; CSV list cells hold "
                                  "JSON): id (required, unique), question, reasoning (text) or steps (a list of "
                                  "strings), answer and/or gold_answer (InfoGain's target; without either, KI only), "
                                  "choices (a list of option texts, without letters), context (passages to judge "
                                  "against instead of the KB), group and question_id (for kgverify report).")
    batch.add_argument("--input", required=True, type=Path, help="rows: .jsonl[.gz], .csv[.gz] or .parquet")
    batch.add_argument("--input-format", choices=["jsonl", "csv", "parquet"], help="default: from the file name")
    batch.add_argument("--output", required=True, type=_file_path, help="the JSONL journal (re-running resumes it)")
    batch.add_argument("--export", type=_export_path, action="append", default=[],
                       help="also write the journal as .csv or .parquet at the end (repeatable)")
    batch.add_argument("--concurrency", type=_positive_int, default=8, help="chains in flight in all, shared among the --server addresses (with more servers than that, the servers take turns)")
    batch.add_argument("--metrics", type=_metrics, default=("ki", "infogain"),
                       help="ki, infogain or both (comma-separated)")
    batch.add_argument("--keep-order", action="store_true", help="write rows in input order")
    batch.add_argument("--evidence-text", action=argparse.BooleanOptionalAction, default=True,
                       help="journal each evidence passage's text (--no-evidence-text: fact id, source and score "
                            "only, for much smaller journals)")
    batch.add_argument("--retry-errors", action="store_true",
                       help="also score again the rows whose last record in --output is an error (e.g. after "
                            "fixing the server); their new record replaces the error in report and --export")
    batch.add_argument("--stall-timeout", type=_non_negative_float, default=STALL_TIMEOUT_S, metavar="SECONDS",
                       help="break a stream that returns no result for this long while rows are in flight and send "
                            f"those rows again (default {STALL_TIMEOUT_S:g}; the server gives a row at most 600 s; "
                            "0: never)")
    batch.add_argument("--no-progress", action="store_true")
    batch.add_argument("--fsync-interval", type=_non_negative_float, default=1.0, metavar="SECONDS",
                       help="seconds between fsyncs of the journal (a kill loses nothing; a power cut at most this)")
    _add_server_options(batch, repeat=True)
    _add_kb_option(batch)
    _add_scoring_options(batch)
    batch.set_defaults(func=_cmd_batch, parser=batch)

    report = sub.add_parser("report", help="compare groups of batch output: means, changes with bootstrap CIs, plots")
    report.add_argument("inputs", nargs="+", type=Path, help="batch output journals (JSONL)")
    report.add_argument("--by", default="group", help="row field that names the group, or 'file' (default: group)")
    report.add_argument("--baseline", help="group the others are compared against (default: the first seen)")
    report.add_argument("--html", type=_file_path, help="write one self-contained HTML report (figures inlined)")
    report.add_argument("--plots-dir", type=Path, help="write the PNG figures here (default with --html: beside it)")
    report.add_argument("--json", type=_file_path, help="write the statistics as JSON")
    report.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000)")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    report.set_defaults(func=_cmd_report)

    demo = sub.add_parser("demo", help="score the bundled example chains",
                          description="Score the bundled example chains. "
                          + _ready_text(EVALUATE_READY_TIMEOUT_S, "the chains need"))
    demo.add_argument("--chains", type=Path, help="chains JSONL (default: the bundled demo chains)")
    _add_server_options(demo)
    _add_kb_option(demo)
    demo.set_defaults(func=_cmd_demo, parser=demo)

    from kb.cli import add_parser as add_kb_parser

    add_kb_parser(sub)

    config = sub.add_parser("config", help="print the effective settings (or --table for all settings)")
    config.add_argument("--table", action="store_true", help="Markdown table of every setting")
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while the command's modules load: no traceback
        return 130


def _main(argv: Sequence[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # gRPC's core logs at INFO on stderr otherwise ("Got goaway … Cancelling all calls" when a server stops): read
    # when the first channel or server starts, so set here, before any; GRPC_VERBOSITY=INFO or DEBUG shows them.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    from kb.cli import finish_output, run, stdout_closed

    if args.command == "kb":  # exactly as `python -m kb ...`: its exit statuses and "kgverify kb: error:"
        return run(args)

    try:
        return finish_output(int(args.func(args) or 0))
    except BrokenPipeError:  # `kgverify ... | head`: the reader went away; no traceback
        return stdout_closed()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error instead of a traceback for expected failures
        from server.pipeline.errors import KgverifyError

        from .embedded import EmbeddedServerError
        from .errors import VerifierError, refusal_note

        if isinstance(exc, (VerifierError, KgverifyError, EmbeddedServerError, OSError, ValueError)):
            print(f"kgverify: error: {exc}{refusal_note(exc, bool(getattr(args, 'token_file', None)))}",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
