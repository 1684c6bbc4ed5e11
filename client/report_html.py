"""The self-contained HTML report: tables and the PNG figures inlined as base64."""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from .report_plots import LABELS
from .report_stats import METRICS

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1d1d1f; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f6; } .ci { color: #666; font-size: 0.85em; } .sig { font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
.note { color: #555; font-size: 0.9rem; }
"""


def fmt(value: float | None, digits: int = 3) -> str:
    """`digits` decimals; a number below 0.01 (e.g. InfoGain per answer token in bits) `digits` significant digits,
    not 0.000 or 0.004 for 0.0042."""
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if 0 < abs(value) < 0.01 else f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}%"


def undefined_interval(share: float) -> str:
    """What stands for a relative change's interval left undefined (a baseline mean of 0 in too many resamples)."""
    return f"[interval undefined: the baseline mean is 0 in {share * 100:.0f}% of resamples]"


def _ci(ci: list, pct: bool = False) -> str:
    if ci[0] is None:
        return ""
    f = fmt_pct if pct else fmt
    return f'<span class="ci">[{f(ci[0])}, {f(ci[1])}]</span>'


def _group_table(report: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(LABELS[m])}</th>" for m in METRICS)
    rows = []
    for group, summary in report["groups"].items():
        cells = []
        for metric in METRICS:
            stat = summary["metrics"][metric]
            undefined = f'<br><span class="ci">{stat["n_undefined"]} undefined</span>' if stat["n_undefined"] else ""
            cells.append(f"<td>{fmt(stat['mean'])} {_ci(stat['ci'])}{undefined}</td>")
        rows.append(f"<tr><td>{escape(group)}</td><td>{summary['n']}</td><td>{summary['n_error']}</td>"
                    + "".join(cells) + "</tr>")
    return (f"<table><tr><th>{escape(report['by'])}</th><th>n</th><th>error rows</th>{head}</tr>"
            + "".join(rows) + "</table>")


def _comparison_table(report: dict[str, Any]) -> str:
    if not report["comparisons"]:
        return '<p class="note">Only one group: nothing to compare.</p>'
    rows = []
    for c in report["comparisons"]:
        rel = c["relative_change"]["value"]
        low, high = c["relative_change"]["ci"]
        undefined = c["relative_change"].get("undefined_share") or 0.0
        # Bold when the interval excludes 0 and every resample had a change; no colour: whether up is good
        # depends on the metric.
        css = "sig" if low is not None and not undefined and (low > 0 or high < 0) else ""
        interval = (_ci(c["relative_change"]["ci"], pct=True) if low is not None or not undefined
                    else f'<span class="ci">{escape(undefined_interval(undefined))}</span>')
        pairing = f"paired by question_id, {c['n'][0]} pairs" if c["paired"] else f"unpaired, n={c['n'][0]} / {c['n'][1]}"
        rows.append(
            f"<tr><td>{escape(c['group'])} vs {escape(c['baseline'])}</td><td>{escape(LABELS[c['metric']])}</td>"
            f"<td>{fmt(c['mean'][0])} → {fmt(c['mean'][1])}</td>"
            f"<td>{fmt(c['difference']['value'])} {_ci(c['difference']['ci'])}</td>"
            f"<td class=\"{css}\">{fmt_pct(rel)} {interval}</td>"
            f"<td>{pairing}</td></tr>")
    return ("<table><tr><th>groups</th><th>metric</th><th>mean A → B</th><th>B − A</th><th>(B − A) / |A|</th>"
            "<th>pairing</th></tr>" + "".join(rows) + "</table>")


def _image(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<h3>{escape(title)}</h3><img alt="{escape(title)}" src="data:image/png;base64,{data}">'


def render_html(report: dict[str, Any], figures: dict[str, tuple[str, bytes]]) -> str:
    boot = report["bootstrap"]
    inputs = ", ".join(escape(p) for p in report["inputs"])
    images = "".join(_image(title, png) for title, png in figures.values())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kgverify report</title><style>{STYLE}</style></head>
<body>
<h1>kgverify report</h1>
<p class="note">Input: {inputs}. Grouped by <code>{escape(report['by'])}</code>; baseline
<b>{escape(str(report['baseline']))}</b> ({escape(report.get('baseline_chosen_by', '--baseline'))}). Means are over chains whose score is defined (null scores are
counted as undefined, never as 0); intervals are 95% percentile bootstrap intervals ({boot['samples']} resamples,
seed {boot['seed']}); a single value (one chain, or one shared question) has none. Comparisons are paired by
<code>question_id</code> when every row of both groups has one.
Contradiction rate = contradicted steps / knowledge-bearing steps. Bold changes: the interval excludes 0 (never
when the baseline mean was 0 in a resample: such a change has no size there).</p>
<h2>Groups</h2>{_group_table(report)}
<h2>Changes against the baseline</h2>{_comparison_table(report)}
<h2>Figures</h2>{images}
</body></html>
"""
