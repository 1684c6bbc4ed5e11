"""Report figures as PNG bytes: per-step InfoGain curves, KI distributions, group means with intervals."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from .report_stats import METRICS, Chain

LABELS = {"knowledge_index": "Knowledge Index", "knowledge_index_paper": "KI (paper convention)",
          "info_gain": "InfoGain (mean per step)", "coverage": "Coverage", "contradiction_rate": "Contradiction rate"}


def _figure(width: float, height: float):
    # Figure without pyplot: no global state, safe in any thread, no display needed.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=130, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _text(name: str) -> str:
    """A group name as matplotlib text: `$` would start math mode (a parse error or garbled text) unescaped."""
    return str(name).replace("$", r"\$")


LABEL_CHARS = 30  # longest group name drawn as it is: longer ones overlap as ticks and squeeze the axes
_SEPARATORS = "/\\-_ .:"


def _labels(groups: list[str]) -> dict[str, str]:
    """Each group's name as drawn: names longer than LABEL_CHARS lose the words that every group's name starts and
    ends with (a shared checkpoint path), then their middle, so that they fit and still tell the groups apart (the
    tables keep the full names)."""
    names = [str(g) for g in groups]
    if len(names) > 1 and max(map(len, names)) > LABEL_CHARS:
        head = _whole_words(os.path.commonprefix(names))
        room = min(map(len, names)) - len(head)
        tail = _whole_words(os.path.commonprefix([n[::-1] for n in names])[:room])[::-1]
        kept = [n[len(head):len(n) - len(tail)] for n in names]
        if all(kept):
            names = [("…" if head else "") + k + ("…" if tail else "") for k in kept]
    half = LABEL_CHARS // 2
    labels = {g: _text(n if len(n) <= LABEL_CHARS else n[:half] + "…" + n[-(LABEL_CHARS - half - 1):])
              for g, n in zip(groups, names)}
    return labels if len(set(labels.values())) == len(labels) else {g: _text(g) for g in groups}  # (never two alike)


def _whole_words(common: str) -> str:
    """A shared start of names up to its last separator (a shared part of a word stays)."""
    return common[:max(common.rfind(s) for s in _SEPARATORS) + 1]


def _legend(ax, handles: list, loc: str) -> None:
    """A legend of these artists under their labels: left to itself, matplotlib leaves out every label that
    starts with "_" (a group named _base would be a curve without a name)."""
    ax.legend(handles, [h.get_label() for h in handles], fontsize=9, loc=loc)


def _colors(groups: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(groups) <= 10 else "tab20"]  # (tab10 gave group 11 the colour of group 1)
    return {g: palette(i % palette.N) for i, g in enumerate(groups)}


def _cumulative(chain: Chain) -> list[float]:
    """L_0 − L_i after each step, while every gain so far is defined."""
    out, total = [], 0.0
    for gain in chain.gains:
        if gain is None:
            break
        total += gain
        out.append(total)
    return out


def info_gain_curves(curves: dict[str, list[dict]], chains: dict[str, list[Chain]], units: str) -> bytes:
    """Left: mean gain g_i at step i with its 95% interval. Right: mean cumulative gain L_0 − L_i."""
    groups = list(curves)
    colors, labels = _colors(groups), _labels(groups)
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    handles = []
    for group in groups:
        points = curves[group]
        if not points:
            continue
        # A step without a point (too few defined gains there) is a gap in the line, not a straight line over it.
        steps = list(range(1, points[-1]["step"] + 1))
        by_step = {p["step"]: p for p in points}
        shown = [by_step.get(s, {"mean": np.nan, "ci": [np.nan, np.nan]}) for s in steps]
        scored = sum(1 for c in chains[group] if any(g is not None for g in c.gains))  # (KI-only rows: no gain)
        handles += left.plot(steps, [p["mean"] for p in shown], marker="o", ms=3, color=colors[group],
                             label=f"{labels[group]} ({scored} chains)")
        left.fill_between(steps, [p["ci"][0] for p in shown], [p["ci"][1] for p in shown], color=colors[group],
                          alpha=0.18, linewidth=0)
        cumulative = [_cumulative(c) for c in chains[group]]
        reached = [[c[s - 1] for c in cumulative if len(c) >= s] for s in steps]
        means = [np.mean(values) if values else np.nan for values in reached]
        right.plot(steps, means, marker="o", ms=3, color=colors[group], label=labels[group])
    left.axhline(0, color="0.4", linewidth=0.8)
    right.axhline(0, color="0.4", linewidth=0.8)
    left.set(title="InfoGain per step (mean, 95% CI)", xlabel="step i", ylabel=f"g_i = L_(i-1) − L_i  [{units}]")
    right.set(title="Cumulative InfoGain (chains reaching step i)", xlabel="step i", ylabel=f"L_0 − L_i  [{units}]")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if handles:  # (no group reaches 3 chains with gains: no curve)
        _legend(left, handles, loc="best")
    return _png(fig)


def ki_distributions(chains: dict[str, list[Chain]]) -> bytes:
    """Left: histogram of chain KI per group (fraction of chains). Right: KI per group as box + points."""
    groups = list(chains)
    colors, labels = _colors(groups), _labels(groups)
    fig = _figure(11, 4.2)
    left, right = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 11)
    data = {g: np.array([c.values["knowledge_index"] for c in chains[g] if c.values["knowledge_index"] is not None])
            for g in groups}
    handles = []
    for group in groups:
        values = data[group]
        if values.size:
            handles += left.hist(values, bins=bins, weights=np.full(values.size, 1 / values.size), histtype="step",
                                 linewidth=2, color=colors[group], label=f"{labels[group]} (n={values.size})")[2]
    left.set(title="Knowledge Index per chain", xlabel="knowledge_index", ylabel="fraction of chains", xlim=(0, 1))
    if handles:
        _legend(left, handles, loc="upper left")
    shown = [g for g in groups if data[g].size]
    if shown:
        box = right.boxplot([data[g] for g in shown], tick_labels=[labels[g] for g in shown], showmeans=True, widths=0.5,
                            patch_artist=True, showfliers=False,  # every point is drawn below anyway
                            medianprops={"color": "black", "linewidth": 1.5},
                            meanprops={"marker": "^", "markerfacecolor": "white", "markeredgecolor": "black"})
        for patch, group in zip(box["boxes"], shown):
            patch.set(facecolor=colors[group], alpha=0.35)
        rng = np.random.default_rng(0)  # fixed jitter: the same data always draws the same picture
        for i, group in enumerate(shown, 1):
            right.scatter(i + rng.uniform(-0.15, 0.15, data[group].size), data[group], s=8, color=colors[group],
                          alpha=0.6, linewidths=0)
    right.set(title="Knowledge Index by group (line: median, △: mean)", ylabel="knowledge_index", ylim=(-0.03, 1.03))
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _png(fig)


def group_means(summary: dict[str, dict]) -> bytes:
    """One panel per metric: each group's mean with its 95% bootstrap interval."""
    groups = list(summary)
    colors, labels = _colors(groups), _labels(groups)
    fig = _figure(13, 3.4)
    axes = fig.subplots(1, len(METRICS))
    for ax, metric in zip(axes, METRICS):
        for y, group in enumerate(groups):
            stat = summary[group]["metrics"][metric]
            if stat["mean"] is None:
                continue
            low, high = stat["ci"]
            xerr = None if low is None else [[stat["mean"] - low], [high - stat["mean"]]]  # (one value: no interval)
            ax.errorbar(stat["mean"], y, xerr=xerr, fmt="o", color=colors[group], capsize=4)
        ax.set_yticks(range(len(groups)), [labels[g] for g in groups] if ax is axes[0] else [""] * len(groups))
        ax.set_ylim(-0.6, len(groups) - 0.4)
        ax.invert_yaxis()
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    return _png(fig)
