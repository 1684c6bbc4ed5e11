"""Readable per-step tables for `kgverify evaluate` and `kgverify demo`."""

from __future__ import annotations

import re
import shutil
import textwrap
from typing import Sequence

from .types import ChainScore, StepScore

# What a terminal acts on instead of showing: C0 controls but tab, DEL, C1 controls (e.g. CSI, U+009B), and the
# bidirectional embeddings, overrides and isolates that reorder what follows them (Trojan Source).
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, one_line: bool = True) -> str:
    """Text from a request, a server or a file, made safe to print to a terminal: controls that could move the
    cursor, recolour, retitle or reorder the output shown as visible escapes (\\x1b, \\u202e); line breaks
    become spaces when one_line."""
    text = str(text)
    if one_line:
        text = _LINE_BREAKS.sub(" ", text)
    return _CONTROLS.sub(_escape, text)


def _num(value: float | None, fmt: str = "{:+.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def _probs(step: StepScore) -> str:
    p = step.probabilities
    return "-" if p is None else f"{p.supported:.2f}/{p.contradicted:.2f}/{p.not_enough_info:.2f}"


def _wrap(text: str, evidence: str, width: int, max_lines: int = 3) -> list[str]:
    """A step's text and evidence id in at most max_lines lines; a longer text ends in " …" and keeps the id."""
    wrapped = textwrap.wrap(text + evidence, width) or [""]
    if len(wrapped) <= max_lines:
        return wrapped
    placeholder = " …" + evidence if len(evidence) + 2 < width else " …"
    return textwrap.wrap(text, width, max_lines=max_lines, placeholder=placeholder)


def step_table(score: ChainScore, expected: Sequence[str] | None = None) -> str:
    width = max(60, shutil.get_terminal_size((120, 20)).columns)
    head = f"{'#':>2}  {'verdict':<16}{'P(s/c/n)':<16}{'gain':>7}  "
    if expected:
        head += f"{'expected':<16}"
    text_width = max(20, width - len(head) - 1)
    lines = [head + "step", "-" * min(width, len(head) + text_width)]
    for i, step in enumerate(score.steps):
        row = f"{step.index:>2}  {printable(step.verdict or '-'):<16}{_probs(step):<16}{_num(step.gain):>7}  "
        if expected:
            want = expected[i] if i < len(expected) else "?"
            mark = "ok" if want == step.verdict else "!!"
            row += f"{printable(want) + ' ' + mark:<16}"
        evidence = f" [{step.evidence[0].fact_id}]" if step.evidence and step.verdict not in ("no_knowledge",) else ""
        wrapped = _wrap(printable(step.text), printable(evidence), text_width)
        lines.append(row + wrapped[0])
        lines.extend(" " * len(row) + more for more in wrapped[1:])
    return "\n".join(lines)


def summary_line(score: ChainScore) -> str:
    parts = []
    if score.counts is not None:
        parts.append(f"KI {_num(score.knowledge_index, '{:.2f}')} (paper {_num(score.knowledge_index_paper, '{:.2f}')}, "
                     f"coverage {_num(score.coverage, '{:.2f}')}), contradicted steps {score.counts['contradicted']}, "
                     f"first error step {score.first_error_step}")
    if score.estimator is not None:
        parts.append(f"InfoGain {_num(score.info_gain)} {score.units}/step (total {_num(score.info_gain_total)}; "
                     f"target {score.target} {score.target_text!r}; estimator {score.provenance.get('estimator', score.estimator)})")
        if score.info_gain_paper is not None or score.info_gain_paper_reason:  # (paper mode)
            parts.append(f"InfoGain (paper formula) {_num(score.info_gain_paper)}"
                         + (f" ({score.info_gain_paper_reason})" if score.info_gain_paper_reason else ""))
    parts.append(f"status {score.status}")
    return printable(" | ".join(parts))


def render_chain(score: ChainScore, question: str = "", expected: Sequence[str] | None = None) -> str:
    out = []
    if question:
        out.append("Q: " + textwrap.shorten(printable(question), 200))
    out.append(step_table(score, expected))
    out.append(summary_line(score))
    return "\n".join(out)
