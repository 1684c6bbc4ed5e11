"""`kgverify report`: group statistics, relative changes with bootstrap intervals, PNG figures and an HTML report."""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .batch_io import atomic_output, first_lines_hold, is_batch_record, is_journal_file, journal_records, same_file
from .render import printable
from .report_html import fmt, fmt_pct, render_html, undefined_interval
from .report_stats import METRICS, Chain, chain_of, compare, group_summary, step_gain_curve, text_of

FILE_GROUPING = "file"  # --by file: one group per input file (e.g. base.jsonl, sft.jsonl, rl.jsonl)


class ReportError(ValueError):
    """The report cannot be made (no records, unknown baseline)."""

    exit_code = 1


class ReportUsageError(ReportError):
    """The arguments cannot make a report (e.g. one input file given twice with --by file)."""

    exit_code = 2


class ReportWriteError(ReportError, OSError):
    """An output file could not be written (a full disk, a file size limit): the OSError it was, named."""

    @classmethod
    def of(cls, what: str, error: OSError, after: str = "") -> ReportWriteError:
        made = cls(printable(f"{what} ({error.strerror or error}){after}"))
        made.errno = error.errno
        return made


class OutputPathError(ReportUsageError):
    """An output file or the plots directory cannot go where it was asked: its parent directory is missing
    (report creates no directory above --plots-dir)."""

    exit_code = 2


@dataclass
class ReportOptions:
    inputs: list[Path]
    by: str = "group"
    baseline: str | None = None
    html: Path | None = None
    plots_dir: Path | None = None
    json_out: Path | None = None
    samples: int = 2000
    seed: int = 0
    max_steps: int = 30


def refuse_repeated_inputs(inputs: list[Path], by: str) -> None:
    """ReportUsageError for a file given twice (by another path too, or a link to it): with --by file it would be
    two groups of the same rows, else each of its rows would count twice (a mean's n doubled, its interval too
    narrow)."""
    for i, path in enumerate(inputs):
        earlier = next((other for other in inputs[:i] if same_file(path, other)), None)
        if earlier is not None:
            why = "each input file is one group with --by file" if by == FILE_GROUPING else "its rows would count twice"
            raise ReportUsageError(printable(f"{path} is given twice (as {earlier}): {why}"))


def file_group_names(inputs: list[Path]) -> list[str]:
    """The group name of each input with --by file: its stem (base.jsonl -> base) when the stems differ, else the
    shortest end of its path that tells it apart (base/scores, sft/scores); ReportError for a file given twice."""
    refuse_repeated_inputs(inputs, FILE_GROUPING)
    resolved = [Path(p).resolve() for p in inputs]
    parts = [path.with_suffix("").parts if path.suffix else path.parts for path in resolved]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(path) for path in resolved]


def load_chains(inputs: list[Path], by: str) -> tuple[dict[str, list[Chain]], str | None]:
    """Chains per group, groups in order of first appearance, and the InfoGain units the records name (None when
    none does); ReportError for a file that is not batch output, ReportUsageError for inputs in different units."""
    groups: dict[str, list[Chain]] = {}
    units: dict[str, str] = {}  # InfoGain units (nats, bits) -> the first input holding a record scored in them
    refuse_repeated_inputs(inputs, by)
    names = file_group_names(inputs) if by == FILE_GROUPING else [None] * len(inputs)
    grouped = False  # whether any record holds the --by field
    for path, name in zip(inputs, names):
        if not Path(path).is_file():
            what = "is a directory (give the journal files in it)" if Path(path).is_dir() else "does not exist"
            raise ReportError(f"{path} {what}")
        chains, batch_records = [], 0
        for record in journal_records(Path(path)):
            batch_records += is_batch_record(record)
            chains.append(chain_of(record, by, name))
            grouped = grouped or record.get(by) not in (None, "")
            unit = record.get("units")  # (absent from the records of older versions: not known)
            if isinstance(unit, str) and unit and record.get("info_gain") is not None:
                units.setdefault(unit, str(path))
        if chains and not batch_records:
            raise ReportError(f"{path} is not a kgverify batch journal: none of its {len(chains)} records has a "
                              "'status' (\"ok\", \"partial\" or an error); give the --output file of kgverify batch, "
                              "not its --input")
        if not chains and _holds_rows(Path(path)):  # (e.g. a dataset whose ids are numbers: no record is read)
            raise ReportError(f"{path} is not a kgverify batch journal: it holds JSON objects, but none is a batch "
                              "record (a string 'id' and a 'status': \"ok\", \"partial\" or an error); give the "
                              "--output file of kgverify batch, not its --input")
        if name is not None:  # --by file: a file without records is a group of none, not a group left out
            groups.setdefault(text_of(name), [])
        for chain in chains:
            groups.setdefault(chain.group, []).append(chain)
    if len(units) > 1:
        held = "; ".join(f"{unit} (e.g. in {path})" for unit, path in units.items())
        raise ReportUsageError(printable(
            f"the inputs hold InfoGain in different units: {held}; InfoGain in nats and in bits cannot be "
            "compared or averaged: score them again in one unit (kgverify batch --units nats or --units bits into "
            "a new --output) and report those"))
    if by not in (FILE_GROUPING, "group") and not grouped and any(groups.values()):
        # (a misspelt --by put every row in one group "(none)" and compared nothing, without a word)
        raise ReportUsageError(printable(
            f"--by {by}: no record has a {by!r} field, so every row would be one group; batch records carry "
            "their input row's 'group' and 'question_id' (--by group, the default), or use --by file for one group "
            "per journal"))
    if not any(groups.values()):
        raise ReportError("no records in " + ", ".join(map(str, inputs)) + " (a batch journal holds one JSON "
                          "object per line, each with an 'id' and a 'status')")
    return groups, next(iter(units), None)


def _holds_rows(path: Path, lines: int = 5) -> bool:
    """Whether a file without a record starts with JSON objects (an input dataset, e.g. one with number ids)."""
    return first_lines_hold(path, lambda value: isinstance(value, dict), lines)


def default_baseline(chains: dict[str, list[Chain]]) -> str:
    """The first group seen that has a defined score (rows that failed before scoring, e.g. unreadable lines
    without a group, are journaled first and would make an empty "(none)" group the baseline)."""
    return next((group for group, members in chains.items()
                 if any(value is not None for chain in members for value in chain.values.values())), next(iter(chains)))


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A generator per quantity derived from the seed: adding a group never changes another group's interval."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in key)])


def build_report(opts: ReportOptions) -> tuple[dict[str, Any], dict[str, list[Chain]]]:
    if opts.samples < 1:
        raise ReportUsageError(f"--bootstrap {opts.samples}: give the number of bootstrap resamples, at least 1 "
                               "(default 2000)")
    if opts.seed < 0:
        raise ReportUsageError(f"--seed {opts.seed}: give a seed of 0 or more")
    chains, units = load_chains(opts.inputs, opts.by)
    baseline = opts.baseline if opts.baseline is not None else default_baseline(chains)
    if opts.baseline is not None:
        chosen = "--baseline"
    elif opts.by == FILE_GROUPING:
        chosen = "the first input file with a defined score"
    else:  # a journal lists rows as they finished, so with concurrency this may change from run to run
        chosen = ("the first group with a defined score in the journal, whose rows are in the order they finished "
                  "unless batch ran with --keep-order: --baseline GROUP names one")
    if baseline not in chains:
        raise ReportError(printable(f"no group {baseline!r} (groups: {', '.join(chains)})"))
    chains = {baseline: chains[baseline], **{g: c for g, c in chains.items() if g != baseline}}

    def rng(*key: str) -> np.random.Generator:
        return _rng(opts.seed, *key)

    report: dict[str, Any] = {
        "inputs": [text_of(p) for p in opts.inputs], "by": opts.by, "baseline": baseline, "baseline_chosen_by": chosen,
        "info_gain_units": units,  # None: the journals predate recording them
        "bootstrap": {"samples": opts.samples, "seed": opts.seed, "level": 0.95},
        "groups": {g: group_summary(c, functools.partial(rng, g, "mean"), opts.samples) for g, c in chains.items()},
        "comparisons": [compare(m, chains[baseline], chains[g], (baseline, g), rng(g, m), opts.samples).to_dict()
                        for g in chains if g != baseline for m in METRICS],
        "info_gain_curves": {g: step_gain_curve(c, opts.max_steps, rng(g, "curve"), opts.samples)
                             for g, c in chains.items()},
    }
    return report, chains


def render_figures(report: dict[str, Any], chains: dict[str, list[Chain]]) -> dict[str, tuple[str, bytes]]:
    """file name -> (title, PNG bytes)."""
    from . import report_plots

    return {
        "info_gain_steps.png": ("Per-step InfoGain curves",
                                report_plots.info_gain_curves(report["info_gain_curves"], chains,
                                                              report.get("info_gain_units") or "nats or bits")),
        "ki_distribution.png": ("Knowledge Index distributions", report_plots.ki_distributions(chains)),
        "group_means.png": ("Group means with 95% intervals", report_plots.group_means(report["groups"])),
    }


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal: group names come from the journals, so controls in them show as escapes."""
    lines = []
    for group, summary in report["groups"].items():
        lines.append(f"{report['by']}={group}: n={summary['n']}, error rows={summary['n_error']}")
        for metric in METRICS:
            s = summary["metrics"][metric]
            lines.append(f"  {metric:<22} {fmt(s['mean']):>7}  [{fmt(s['ci'][0])}, {fmt(s['ci'][1])}]"
                         f"  n={s['n_defined']}, undefined={s['n_undefined']}")
    if report["comparisons"]:
        lines.append(f"baseline {report['by']}={report['baseline']} ({report.get('baseline_chosen_by', '--baseline')})")
    for c in report["comparisons"]:
        pairing = f"paired, {c['n'][0]} questions" if c["paired"] else f"unpaired, n={c['n'][0]}/{c['n'][1]}"
        rel = c["relative_change"]
        interval = (f"[{fmt_pct(rel['ci'][0])}, {fmt_pct(rel['ci'][1])}]" if rel["ci"][0] is not None
                    or not rel.get("undefined_share") else undefined_interval(rel["undefined_share"]))
        lines.append(f"{c['group']} vs {c['baseline']}  {c['metric']:<22} {fmt(c['mean'][0])} -> {fmt(c['mean'][1])}"
                     f"  change {fmt_pct(rel['value'])} {interval}  ({pairing})")
    return "\n".join(map(printable, lines))


def check_output_paths(opts: ReportOptions) -> None:
    """OutputPathError naming the directory when the parent directory of --json, --html or --plots-dir does not
    exist; checked before any work, so nothing is written (and no directory made) when one is wrong."""
    for option, path in (("--json", opts.json_out), ("--html", opts.html), ("--plots-dir", opts.plots_dir)):
        if path is None:
            continue
        parent = Path(path).absolute().parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise OutputPathError(f"{option} {path}: the directory {parent} {what} (create it first)")
        if option == "--plots-dir":
            continue
        if Path(path).is_dir():
            raise OutputPathError(f"{option} {path} is a directory: give a file name")
        if any(same_file(path, source) for source in opts.inputs):
            raise OutputPathError(f"{option} {path} is one of the inputs: give another file (nothing was written)")
        if Path(path).exists() and is_journal_file(Path(path)):
            raise OutputPathError(f"{option} {path} is a batch journal: give another file (nothing was written; "
                                  f"was {path} meant as an input? {option} takes the file to write)")
    if opts.json_out is not None and opts.html is not None and same_file(opts.json_out, opts.html):
        raise OutputPathError(f"--json and --html are the same file ({opts.json_out}): give each its own file "
                              "(nothing was written)")
    plots_dir = _plots_dir(opts)
    if plots_dir is not None and plots_dir.exists() and not plots_dir.is_dir():
        raise OutputPathError(f"the plots directory {plots_dir} is not a directory (give another --plots-dir)")


def _plots_dir(opts: ReportOptions) -> Path | None:
    """--plots-dir, or the directory beside --html (report_plots/ for report.html)."""
    if opts.plots_dir is not None:
        return Path(opts.plots_dir)
    return Path(opts.html).with_name(f"{Path(opts.html).stem}_plots") if opts.html is not None else None


def _write_atomic(path: Path, data: bytes, what: str) -> None:
    """Writes `path` whole or not at all; ReportError naming it (`what`: the option or the figure it is) when it
    cannot be written (a full disk, a file size limit)."""
    try:
        with atomic_output(path) as fh:
            fh.write(data)
    except OSError as exc:
        raise ReportWriteError.of(f"cannot write {what} {path}", exc, ": nothing of it was written") from None


def run_report(opts: ReportOptions) -> dict[str, Any]:
    """Builds the report; writes JSON, PNGs and HTML where asked. Returns the report (with written paths).

    OutputPathError before anything is read when an output's directory does not exist; the plots directory
    (--plots-dir, or beside --html) is made when missing, its parent never."""
    check_output_paths(opts)
    report, chains = build_report(opts)
    plots_dir = _plots_dir(opts)
    written: dict[str, str] = {}
    if plots_dir is not None or opts.html is not None:
        figures = render_figures(report, chains)
        if plots_dir is not None:
            try:
                Path(plots_dir).mkdir(exist_ok=True)
            except OSError as exc:
                raise ReportWriteError.of(f"cannot create the plots directory {plots_dir}", exc) from None
            for name, (_, png) in figures.items():
                _write_atomic(Path(plots_dir) / name, png, "the figure")
                written[name] = str(Path(plots_dir) / name)
        if opts.html is not None:
            _write_atomic(opts.html, render_html(report, figures).encode("utf-8"), "--html")
            written["html"] = str(opts.html)
    report["written"] = written
    if opts.json_out is not None:
        _write_atomic(opts.json_out, json.dumps(report, indent=2, allow_nan=False).encode("utf-8"), "--json")
        written["json"] = str(opts.json_out)  # after the dump: the file lists the other outputs
    return report
