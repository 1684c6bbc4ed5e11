"""Report statistics: undefined scores, contradiction rate, paired and unpaired changes with bootstrap intervals."""

import numpy as np
import pytest

from client.report import ReportError, ReportOptions, build_report
from client.report_stats import Chain, chain_of, compare, contradiction_rate, group_summary, relative


def _record(i, group, info_gain, ki=0.5, qid=None, counts=None, status="ok"):
    record = {"id": f"{group}-{i}", "status": status, "group": group, "knowledge_index": ki,
              "knowledge_index_paper": ki, "coverage": 1.0, "info_gain": info_gain,
              "counts": counts or {"supported": 2, "contradicted": 1, "not_enough_info": 1, "no_knowledge": 1,
                                   "error": 0},
              "steps": [{"gain": info_gain}, {"gain": info_gain}]}
    if qid is not None:
        record["question_id"] = qid
    return record


def test_contradiction_rate_is_over_knowledge_bearing_steps_only():
    assert contradiction_rate({"supported": 2, "contradicted": 1, "not_enough_info": 1, "no_knowledge": 5}) == 0.25
    assert contradiction_rate({"supported": 0, "contradicted": 0, "not_enough_info": 0, "no_knowledge": 3}) is None
    assert contradiction_rate(None) is None


def test_error_rows_and_null_scores_are_undefined_never_zero():
    error = {"id": "e", "status": {"code": "UNAVAILABLE"}, "group": "a", "knowledge_index": None, "counts": None,
             "steps": []}
    chains = [chain_of(_record(0, "a", 1.0, ki=None), "group"), chain_of(_record(1, "a", 3.0, ki=0.8), "group"),
              chain_of(error, "group"), chain_of({**_record(2, "a", float("nan")), "info_gain": float("nan")}, "group")]
    summary = group_summary(chains, lambda metric: np.random.default_rng(0), 200)
    assert summary["n"] == 4 and summary["n_error"] == 1
    ki = summary["metrics"]["knowledge_index"]
    assert ki["mean"] == pytest.approx((0.8 + 0.5) / 2) and ki["n_defined"] == 2 and ki["n_undefined"] == 2
    ig = summary["metrics"]["info_gain"]
    assert ig["mean"] == pytest.approx(2.0) and ig["n_undefined"] == 2  # NaN counts as undefined
    assert summary["metrics"]["contradiction_rate"]["n_undefined"] == 1  # the error row


def test_relative_change_uses_the_magnitude_of_the_baseline():
    assert relative(-2.0, -1.0) == pytest.approx(0.5)  # less negative: an increase
    assert relative(2.0, 1.0) == pytest.approx(-0.5)
    assert np.isnan(relative(0.0, 1.0))


def _groups(n, effect, noise, seed, pair=True):
    rng = np.random.default_rng(seed)
    base_values = rng.normal(1.0, 0.5, n)
    base = [chain_of(_record(i, "base", float(v), qid=f"q{i}" if pair else None), "group")
            for i, v in enumerate(base_values)]
    sft = [chain_of(_record(i, "sft", float(v * effect + rng.normal(0, noise)), qid=f"q{i}" if pair else None),
                    "group") for i, v in enumerate(base_values)]
    return base, sft


def test_paired_change_recovers_a_known_effect_with_a_tight_interval():
    base, sft = _groups(300, effect=0.6, noise=0.05, seed=1)
    paired = compare("info_gain", base, sft, ("base", "sft"), np.random.default_rng(0), 1000)
    assert paired.paired and paired.n == (300, 300)
    low, high = paired.relative_change["ci"]
    assert low < -0.4 < high and high - low < 0.05
    assert paired.relative_change["value"] == pytest.approx(-0.4, abs=0.02)

    unpaired = compare("info_gain", *_groups(300, 0.6, 0.05, seed=1, pair=False), ("base", "sft"),
                       np.random.default_rng(0), 1000)
    assert not unpaired.paired
    u_low, u_high = unpaired.relative_change["ci"]
    assert u_high - u_low > 2 * (high - low)  # pairing removes the between-question variance


def test_pairing_averages_repeated_questions_and_uses_only_shared_ones():
    base = [chain_of(_record(i, "base", v, qid=q), "group") for i, (v, q) in
            enumerate([(1.0, "q1"), (3.0, "q1"), (4.0, "q2"), (9.0, "q3")])]
    sft = [chain_of(_record(i, "sft", v, qid=q), "group") for i, (v, q) in enumerate([(1.0, "q1"), (2.0, "q2")])]
    result = compare("info_gain", base, sft, ("base", "sft"), np.random.default_rng(0), 200)
    assert result.paired and result.n == (2, 2)
    assert result.mean == (pytest.approx(3.0), pytest.approx(1.5))  # q1: mean(1, 3) = 2; q3 has no partner
    assert result.difference["value"] == pytest.approx(-1.5)


def test_the_report_is_seeded_and_names_its_baseline(tmp_path):
    import json

    path = tmp_path / "out.jsonl"
    records = [_record(i, g, 1.0 + i * (0.5 if g == "sft" else 1.0), qid=f"q{i}") for g in ("sft", "base")
               for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first, _ = build_report(ReportOptions([path], baseline="base", samples=300))
    second, _ = build_report(ReportOptions([path], baseline="base", samples=300))
    assert first == second and list(first["groups"]) == ["base", "sft"]
    assert {c["group"] for c in first["comparisons"]} == {"sft"}
    with pytest.raises(ReportError, match="no group 'rl'"):
        build_report(ReportOptions([path], baseline="rl"))


def test_step_gain_curves_stop_where_too_few_chains_reach_a_step():
    from client.report_stats import step_gain_curve

    chains = [Chain(str(i), "a", None, True, {}, gains=[1.0] * (2 + i), ki_steps=0) for i in range(4)]
    curve = step_gain_curve(chains, 30, np.random.default_rng(0), 100, min_chains=3)
    assert [p["step"] for p in curve] == [1, 2, 3] and [p["n"] for p in curve] == [4, 4, 3]
