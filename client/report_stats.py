"""Report statistics: per-chain metrics from batch records, group means and relative changes with bootstrap CIs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .batch_io import whole_number

METRICS = ("knowledge_index", "knowledge_index_paper", "info_gain", "coverage", "contradiction_rate")
NO_GROUP = "(none)"
# Share of bootstrap resamples without a relative change (baseline mean 0) above which its interval is undefined.
MAX_UNDEFINED_SHARE = 0.005


@dataclass
class Chain:
    """One batch record reduced to what the report uses."""

    id: str
    group: str
    question_id: str | None
    ok: bool  # status ok or partial (a definite result, not an error status)
    values: dict[str, float | None]
    gains: list[float | None]
    ki_steps: int  # knowledge-bearing steps


BEARING = ("supported", "contradicted", "not_enough_info")


def verdict_counts(value: Any) -> dict[str, int] | None:
    """A record's step counts per verdict, or None when they are absent or not counts (a hand-edited or foreign
    journal: not an object, or a count that is not a whole number >= 0), so that they stay undefined."""
    if not isinstance(value, dict):
        return None
    counts = {}
    for key in BEARING:
        count = value.get(key, 0)
        if count is None:
            count = 0
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not math.isfinite(count) \
                or count < 0 or count != int(count):
            return None
        counts[key] = int(count)
    return counts


def contradiction_rate(counts: dict[str, int] | None) -> float | None:
    """Contradicted steps / knowledge-bearing steps (supported + contradicted + not_enough_info); None if none."""
    counts = verdict_counts(counts)
    if not counts:
        return None
    bearing = sum(counts.values())
    return None if bearing == 0 else counts["contradicted"] / bearing


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # undefined stays undefined: never a NaN or a string in a mean
    return float(value)


def text_of(value: Any) -> str:
    """A name from a journal or a file name as valid Unicode: a lone surrogate (half of an emoji cut off, or a
    byte of a file name that is not UTF-8) shows as its escape (\\ud83d) instead of failing every output."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def chain_of(record: dict[str, Any], by: str, group: str | None = None) -> Chain:
    """The report's view of one record; `group` overrides the --by field (grouping by input file)."""
    if group is None:
        raw = record.get(by)
        group = NO_GROUP if raw is None or raw == "" else whole_number(raw)
    group = text_of(group)
    ok = isinstance(record.get("status"), str)
    values = {m: _number(record.get(m)) for m in METRICS if m != "contradiction_rate"}
    values["contradiction_rate"] = contradiction_rate(record.get("counts")) if ok else None
    steps = record.get("steps")
    steps = steps if isinstance(steps, list) else []  # malformed fields stay undefined, as malformed metrics do
    counts = verdict_counts(record.get("counts")) or {}
    qid = record.get("question_id")
    # (a whole float is its integer: question ids 3 and 3.0, from a float column with a gap, are one question)
    qid = None if qid in (None, "") else str(whole_number(qid))
    return Chain(id=str(record.get("id")), group=group, question_id=qid, ok=ok,
                 values=values, gains=[_number(s.get("gain")) for s in steps if isinstance(s, dict)],
                 ki_steps=sum(counts.values()))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


BLOCK_VALUES = 1 << 22  # resampled values drawn at once (32 MiB of indices): memory stays flat however many rows


def resample_means(rng: np.random.Generator, n_boot: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """n_boot bootstrap means of each array, all resampled with the same indices (pairs stay pairs).

    The indices are drawn block by block in the order one (n_boot, n) draw would make them, so the means are
    the same as from that draw, without holding n_boot x n indices."""
    size = arrays[0].size
    out = [np.empty(n_boot) for _ in arrays]
    block = max(1, BLOCK_VALUES // max(size, 1))
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        index = rng.integers(0, size, size=(stop - start, size))
        for means, data in zip(out, arrays):
            means[start:stop] = data[index].mean(axis=1)
    return out


# Fewest values that have an interval: every resample of one value is that value, a width of 0 that would show
# it (and a change from it) as certain.
MIN_VALUES = 2


def bootstrap_mean(values: Sequence[float], rng: np.random.Generator, n_boot: int) -> dict[str, Any]:
    """Mean of the defined values with a 95% percentile bootstrap interval (None when there are none; the interval
    None for fewer than MIN_VALUES)."""
    data = np.asarray(values, dtype=float)
    if data.size < MIN_VALUES:
        return {"mean": _mean(data), "ci": [None, None]}
    means, = resample_means(rng, n_boot, data)
    return {"mean": float(data.mean()), "ci": list(percentile_ci(means))}


def relative(a: np.ndarray | float, b: np.ndarray | float):
    """(B − A) / |A|, NaN where A is 0 (then the change has no defined size)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a_arr != 0, (b_arr - a_arr) / np.abs(a_arr), np.nan)


@dataclass
class Comparison:
    metric: str
    baseline: str
    group: str
    paired: bool
    n: tuple[int, int]  # defined values (pairs: both numbers equal)
    mean: tuple[float | None, float | None]
    difference: dict[str, Any] = field(default_factory=dict)  # {"value", "ci"}
    relative_change: dict[str, Any] = field(default_factory=dict)  # {"value", "ci", "undefined_share"}; see
    # relative_change(): value None when A is 0, ci None when A is 0 in too many resamples

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": self.baseline, "group": self.group, "paired": self.paired,
                "n": list(self.n), "mean": list(self.mean), "difference": self.difference,
                "relative_change": self.relative_change}


def _by_question(chains: Iterable[Chain], metric: str) -> dict[str, float]:
    """Mean of the defined values per question_id (repeated samples of one question count once)."""
    sums: dict[str, list[float]] = {}
    for chain in chains:
        value = chain.values[metric]
        if value is not None and chain.question_id is not None:
            sums.setdefault(chain.question_id, []).append(value)
    return {q: float(np.mean(v)) for q, v in sums.items()}


def _point(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def compare(metric: str, base: list[Chain], other: list[Chain], names: tuple[str, str],
            rng: np.random.Generator, n_boot: int) -> Comparison:
    """Group `other` against `base`: paired by question_id when every chain of both has one and they share some."""
    pairable = all(c.question_id is not None for c in (*base, *other))
    a_q, b_q = (_by_question(base, metric), _by_question(other, metric)) if pairable else ({}, {})
    shared = sorted(set(a_q) & set(b_q))
    if shared:
        a = np.array([a_q[q] for q in shared])
        b = np.array([b_q[q] for q in shared])
        n = (len(shared), len(shared))
    else:
        a = np.array([c.values[metric] for c in base if c.values[metric] is not None])
        b = np.array([c.values[metric] for c in other if c.values[metric] is not None])
        n = (a.size, b.size)
        if a.size == 0 or b.size == 0:
            return Comparison(metric, *names, False, n, (_mean(a), _mean(b)), {"value": None, "ci": [None, None]},
                              {"value": None, "ci": [None, None], "undefined_share": None})
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if min(n) < MIN_VALUES:
        return Comparison(metric, *names, bool(shared), n, (mean_a, mean_b),
                          {"value": mean_b - mean_a, "ci": [None, None]},
                          {"value": _point(float(relative(mean_a, mean_b))), "ci": [None, None],
                           "undefined_share": None})
    if shared:
        boot_a, boot_b = resample_means(rng, n_boot, a, b)
    else:
        boot_a, = resample_means(rng, n_boot, a)
        boot_b, = resample_means(rng, n_boot, b)
    return Comparison(
        metric, *names, bool(shared), n, (mean_a, mean_b),
        {"value": mean_b - mean_a, "ci": list(percentile_ci(boot_b - boot_a))},
        relative_change(mean_a, mean_b, boot_a, boot_b))


def relative_change(mean_a: float, mean_b: float, boot_a: np.ndarray, boot_b: np.ndarray) -> dict[str, Any]:
    """{"value", "ci", "undefined_share"}: (B − A) / |A| and its interval. Resamples whose baseline mean is 0 have
    no relative change; when more than MAX_UNDEFINED_SHARE of them have none, neither has the interval (keeping
    only the others would leave the resamples where the baseline had no events out: a rare event seen only in
    the baseline would show as a certain −100%)."""
    samples = relative(boot_a, boot_b)
    undefined = float(np.mean(~np.isfinite(samples))) if samples.size else 0.0
    ci = [None, None] if undefined > MAX_UNDEFINED_SHARE else list(percentile_ci(samples))
    return {"value": _point(float(relative(mean_a, mean_b))), "ci": ci, "undefined_share": undefined}


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def group_summary(chains: list[Chain], rng: Callable[[str], np.random.Generator], n_boot: int) -> dict[str, Any]:
    """n, error rows, and per metric: defined / undefined counts and the mean with its interval (drawn from
    rng(metric): a metric's interval never moves with how many values another metric has)."""
    out: dict[str, Any] = {"n": len(chains), "n_error": sum(not c.ok for c in chains), "metrics": {}}
    for metric in METRICS:
        defined = [c.values[metric] for c in chains if c.values[metric] is not None]
        out["metrics"][metric] = {"n_defined": len(defined), "n_undefined": len(chains) - len(defined),
                                  **bootstrap_mean(defined, rng(metric), n_boot)}
    return out


def step_gain_curve(chains: list[Chain], max_steps: int, rng: np.random.Generator,
                    n_boot: int, min_chains: int = 3) -> list[dict[str, Any]]:
    """Mean InfoGain at each step index (1-based) with its interval, while at least min_chains reach it; a step
    where fewer than min_chains have a defined gain (the others' are null) has no point, and the curve goes on."""
    curve = []
    for index in range(max_steps):
        if sum(index < len(c.gains) for c in chains) < min_chains:
            break
        values = [c.gains[index] for c in chains if index < len(c.gains) and c.gains[index] is not None]
        if len(values) >= min_chains:
            curve.append({"step": index + 1, "n": len(values), **bootstrap_mean(values, rng, n_boot)})
    return curve
