"""The benchmarks' metrics (their numbers are quoted in README.md and docs/) and their handling of missing data."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from server.pipeline.types import (Claim, ClaimResult, Evidence, EvidenceOrigin, Judgement, LabelProbs, Step,
                                   StepResult, Tier, Verdict)
from tests.conftest import REPO


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


EVIDENCE = (Evidence("f1", "Remdesivir shortened recovery in adults.", "cord", "", 0.9, EvidenceOrigin.KNOWLEDGE_BASE),)


def _claim(text: str, verdict: Verdict, probs: tuple[float, float, float]) -> ClaimResult:
    return ClaimResult(Claim(text, 0, len(text)), verdict, LabelProbs(*probs), Tier.EMBEDDED, EVIDENCE)


class _Result:
    def __init__(self, *steps: tuple[ClaimResult, ...]):
        self.steps = [StepResult(Step(0, " ".join(c.claim.text for c in claims), 0, 1), claims[0].verdict, None,
                                 Tier.EMBEDDED, EVIDENCE, claims) for claims in steps]


def test_ki_e2e_cascade_calls_are_counted_per_step_not_per_claim():
    ki_e2e = _bench("ki_e2e")
    # one step of two claims, both escalated (one call each); one step of one confident supported claim
    two = (_claim("Remdesivir cures COVID-19.", Verdict.CONTRADICTED, (0.1, 0.85, 0.05)),
           _claim("It is given orally.", Verdict.SUPPORTED, (0.5, 0.2, 0.3)))
    one = (_claim("Remdesivir shortened recovery.", Verdict.SUPPORTED, (0.95, 0.03, 0.02)),)
    assert ki_e2e.escalation([_Result(two), _Result(one)], 0.8) == 1.0  # 2 LLM calls over 2 steps


def _judgement(verdict: Verdict, probs) -> Judgement:
    return Judgement(verdict, LabelProbs(*probs), Tier.EMBEDDED)


def test_cascade_accuracy_scores_binary_sources_supported_vs_not():
    cascade = _bench("cascade")
    # SciFact's "contradicted" means "not entailed": a not_enough_info verdict is right there, as in bench/judge.py
    rows = [{"source": "scifact", "label": "contradicted"}, {"source": "wice", "label": "not_enough_info"},
            {"source": "covidfact", "label": "supported"}, {"source": "checkcovid", "label": "contradicted"}]
    judgements = [_judgement(Verdict.NOT_ENOUGH_INFO, (0.05, 0.05, 0.9)),  # kept, right (not supported)
                  _judgement(Verdict.CONTRADICTED, (0.05, 0.9, 0.05)),  # escalated, right (not supported)
                  _judgement(Verdict.SUPPORTED, (0.95, 0.03, 0.02)),  # kept, right
                  _judgement(Verdict.NOT_ENOUGH_INFO, (0.05, 0.05, 0.9))]  # kept, wrong (3-way source)
    out = cascade.rates(rows, judgements, 0.8)
    assert out["embedded_accuracy_kept"] == round(2 / 3, 4)
    assert out["embedded_accuracy_escalated"] == 1.0
    assert out["llm_calls_per_step"] == 0.25


def test_judge_metrics_match_their_definitions():
    import numpy as np

    judge = _bench("judge")
    rows = [{"source": "scifact", "label": lab} for lab in ("supported", "contradicted", "contradicted")] + \
           [{"source": "checkcovid", "label": lab} for lab in ("supported", "contradicted", "not_enough_info")]
    probs = np.array([[0.61, 0.29, 0.1], [0.2, 0.1, 0.7], [0.65, 0.05, 0.3],
                      [0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]])
    y, k = judge.targets(rows)
    pred, conf = judge.decisions_from_probs(probs, rows)
    assert y.tolist() == [0, 1, 1, 0, 1, 2] and k.tolist() == [2, 2, 2, 3, 3, 3]
    assert pred.tolist() == [0, 1, 0, 0, 2, 2]  # binary: P(supported) >= 0.5; 3-way: argmax
    assert conf.tolist() == pytest.approx([0.61, 0.8, 0.65, 0.7, 0.7, 0.7])
    # binary F1: supported 2*1/(1+2) = 2/3, not supported 2*1/(2+1) = 2/3
    assert judge.macro_f1_np(y[:3], pred[:3], 2) == pytest.approx(2 / 3)
    # 3-way: supported 1, contradicted 0, not_enough_info 2*1/(1+2): mean over the three classes
    assert judge.macro_f1_np(y[3:], pred[3:], 3) == pytest.approx((1 + 0 + 2 / 3) / 3)
    # ECE, 15 equal-width bins weighted by their rows: 0.8 alone (right), 0.61 and 0.65 in (0.6, 0.667] (one
    # right), the three 0.7s in (0.667, 0.733] (two right)
    correct = y == pred
    expected = (abs(0.8 - 1) + abs(0.61 + 0.65 - 1) + abs(3 * 0.7 - 2)) / 6
    assert judge.ece_np(conf, correct) == pytest.approx(expected)


def _stderr_of_exit(capsys, fn, *args) -> str:
    with pytest.raises(SystemExit) as raised:
        fn(*args)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_judge_without_its_dev_file_says_so(tmp_path, capsys):
    missing = tmp_path / "nope" / "dev.jsonl.gz"
    err = _stderr_of_exit(capsys, _bench("judge").main, ["--dev", str(missing)])
    assert f"{missing} not found" in err and "../shared/data" in err


def test_split_without_processbench_says_so(tmp_path, capsys):
    err = _stderr_of_exit(capsys, _bench("split").main, ["--data", str(tmp_path)])
    assert f"{tmp_path / 'gsm8k.json'} not found" in err and "../shared/data" in err


def test_ki_e2e_without_shared_data_says_so(tmp_path, monkeypatch, capsys):
    ki_e2e = _bench("ki_e2e")
    monkeypatch.setattr(ki_e2e, "DATA", tmp_path)
    err = _stderr_of_exit(capsys, ki_e2e.main, [])
    assert f"{tmp_path / 'kb' / 'checkcovid_corpus.jsonl.gz'} not found" in err and "../shared/data" in err


def test_cascade_without_shared_data_says_so(tmp_path, monkeypatch, capsys):
    cascade = _bench("cascade")
    monkeypatch.setattr(cascade, "DEV", tmp_path / "dev.jsonl.gz")
    err = _stderr_of_exit(capsys, cascade.main, [])
    assert f"{tmp_path / 'dev.jsonl.gz'} not found" in err and "../shared/data" in err


def test_kb_bench_without_medquad_or_a_built_kb_says_so(tmp_path, capsys):
    kb = _bench("kb")
    err = _stderr_of_exit(capsys, kb.main, ["--medquad", str(tmp_path / "medquad.jsonl.gz"), "--work",
                                            str(tmp_path / "work")])
    assert f"{tmp_path / 'medquad.jsonl.gz'} not found" in err
    medquad = tmp_path / "medquad.jsonl.gz"
    medquad.write_bytes(b"")
    err = _stderr_of_exit(capsys, kb.main, ["--only", "quality", "--medquad", str(medquad), "--work",
                                            str(tmp_path / "work")])
    assert "no MedQuAD KB in" in err and "--only build,quality" in err


def test_split_throughput_counts_the_gold_steps_whatever_the_splitter_makes_of_them():
    split = _bench("split")
    from server.pipeline.splitter import RuleSplitter

    # three gold steps of several sentences each: as one run-on paragraph the splitter makes more steps of them
    chains = [["To find how many marbles Tom has left, we can work through the problem in steps. First, Tom "
               "starts the week with 40 red marbles in his bag.",
               "On Monday, he gives away one quarter of the marbles. Since he had 40 marbles, \\(40 / 4 = 10\\) "
               "marbles are given away. So, he keeps \\(40 - 10 = 30\\) marbles. Then, his sister gives him 12 "
               "blue marbles.",
               "Now Tom has \\(30 + 12 = 42\\) marbles. Therefore, at the end of Monday Tom has 42 marbles. The "
               "answer is \\(\\boxed{42}\\)."]] * 2
    out = split.throughput(RuleSplitter(), chains, "runon", 1)
    assert out["steps"] == 6 and out["chains"] == 2
    assert out["predicted_steps"] > 6
    # the rate is of the gold steps: steps/s over chains/s is the gold steps per chain
    assert out["steps_per_s"] / out["chains_per_s"] == pytest.approx(3, rel=0.01)


@pytest.mark.skipif(not (REPO / "models" / "nli-judge" / "config.json").exists(), reason="the NLI judge is not exported")
def test_cascade_bench_runs_the_judge_the_server_would_run(tmp_path, monkeypatch, capsys, cache_dir, demo_kb_path):
    import gzip
    import json

    cascade = _bench("cascade")
    rows = [{"id": "a", "source": "checkcovid", "label": "supported", "hypothesis": "Masks reduce transmission.",
             "premise": "Wearing masks reduced the transmission of the virus in households."},
            {"id": "b", "source": "scifact", "label": "contradicted", "hypothesis": "Aspirin raises blood glucose.",
             "premise": "Aspirin inhibits platelet aggregation."}]
    dev = tmp_path / "dev.jsonl.gz"
    with gzip.open(dev, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(cascade, "DEV", dev)
    monkeypatch.setenv("KGV_JUDGE__NLI_INT8", "true")  # a precision the default never resolves to
    monkeypatch.setenv("KGV_JUDGE__CASCADE_THRESHOLD", "0.5")
    monkeypatch.setenv("KGV_JUDGE__MIN_DECISIVE_PROBABILITY", "0.5")
    monkeypatch.setenv("KGV_JUDGE__WINDOW_CHARS", "300")
    assert cascade.main(["--cache-dir", str(cache_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] == 0.5 and out["judge"].endswith("+int8")
    assert out["overall"]["pairs"] == 2 and out["demo_chains"]["steps"] > 0
    policy = cascade.embedded_judge(SimpleNamespace(name="scorer")).policy
    assert (policy.min_decisive, policy.window_chars) == (0.5, 300)


def _write_checkcovid(root):
    """A two-abstract Check-COVID corpus and two dev claims (team-written) in the shared data's layout."""
    import gzip
    import json

    corpus = [{"cord_id": "c1", "title": "Masks", "abstract": [
        "Wearing masks reduced household transmission of the virus by half.",
        "The effect was larger when masks were worn before symptoms began."]},
        {"cord_id": "c2", "title": "Vitamin D", "abstract": [
            "Vitamin D supplements did not shorten hospital stays of patients with the disease."]}]
    dev = [{"id": "d1", "source": "checkcovid", "label": "supported", "hypothesis": "Masks reduce transmission.",
            "premise": corpus[0]["abstract"][0]},
           {"id": "d2", "source": "checkcovid", "label": "contradicted",
            "hypothesis": "Vitamin D shortens hospital stays.", "premise": corpus[1]["abstract"][0]}]
    for name, rows in (("kb/checkcovid_corpus.jsonl.gz", corpus), ("nli/dev.jsonl.gz", dev)):
        (root / name).parent.mkdir(exist_ok=True)
        with gzip.open(root / name, "wt", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))


def test_ki_e2e_takes_the_servers_cascade_threshold(tmp_path, monkeypatch, capsys, cache_dir, demo_kb_path):
    import json

    ki_e2e = _bench("ki_e2e")
    _write_checkcovid(tmp_path)
    monkeypatch.setattr(ki_e2e, "DATA", tmp_path)
    monkeypatch.setenv("KGV_JUDGE__CASCADE_THRESHOLD", "0.5")
    assert ki_e2e.main(["--judges", "baseline", "--mode", "hybrid", "--joint", "2", "--conflict", "rank",
                        "--kb-dir", str(tmp_path / "kb-built"), "--cache-dir", str(cache_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cascade_threshold"] == 0.5 and report["claims"] == 2
    [run] = report["runs"]
    assert run["e2e"]["evidence_recall"]["any_gold_sentence"] == 1.0  # each premise is in the two-abstract KB


def test_ki_e2e_judges_off_topic_evidence_at_each_top_k(tmp_path, monkeypatch, capsys, cache_dir, demo_kb_path):
    import json

    ki_e2e = _bench("ki_e2e")
    _write_checkcovid(tmp_path)
    monkeypatch.setattr(ki_e2e, "DATA", tmp_path)
    assert ki_e2e.main(["--judges", "baseline", "--mode", "dense,hybrid", "--top-k", "1,3", "--joint", "2",
                        "--conflict", "rank", "--kb-dir", str(tmp_path / "kb-built"), "--cache-dir",
                        str(cache_dir)]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["retrieval_mode"], r["top_k"], r["off_topic_evidence"]["passages_per_claim"]) for r in runs] == [
        ("dense", 1, 1), ("dense", 3, 3), ("hybrid", 1, 1), ("hybrid", 3, 3)]


def test_judge_bootstrap_draws_pairs_that_share_a_claim_or_a_premise_together():
    import numpy as np

    judge = _bench("judge")
    rows = [{"hypothesis": h, "premise": p} for h, p in
            (("h1", "p1"), ("h1", "p2"), ("h2", "p2"), ("h3", "p3"), ("h4", "p3"), ("h5", "p5"))]
    unit = judge.units(rows)
    assert unit[0] == unit[1] == unit[2] and unit[3] == unit[4] and len(set(unit.tolist())) == 3
    for sample in judge.unit_resamples(unit, 200, np.random.default_rng(0)):
        count = np.bincount(sample, minlength=6)
        assert count[0] == count[1] == count[2] and count[3] == count[4]  # a unit comes whole or not at all
        assert count[0] + count[3] + count[5] == 3  # as many units as the source has


@pytest.mark.skipif(not (REPO / "models" / "nli-judge" / "config.json").exists(), reason="the NLI judge is not exported")
def test_judge_bench_reports_intervals_over_units(tmp_path, capsys):
    import gzip
    import json

    judge = _bench("judge")
    # a claim with its supporting and its refuting premise, and a premise with two counter-claims: two units each
    rows = []
    for i in range(2):
        rows += [{"source": "checkcovid", "label": "supported", "hypothesis": f"Masks reduce spread in city {i}.",
                  "premise": f"In city {i}, masks halved the spread of the virus."},
                 {"source": "checkcovid", "label": "contradicted", "hypothesis": f"Masks reduce spread in city {i}.",
                  "premise": f"In city {i}, masks did not change the spread of the virus."},
                 {"source": "covidfact", "label": "supported", "hypothesis": f"Drug {i} lowers fever.",
                  "premise": f"Drug {i} lowered fever in a trial of 200 adults."},
                 {"source": "covidfact", "label": "contradicted", "hypothesis": f"Drug {i} raises fever.",
                  "premise": f"Drug {i} lowered fever in a trial of 200 adults."}]
    dev = tmp_path / "dev.jsonl.gz"
    with gzip.open(dev, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    assert judge.main(["--dev", str(dev), "--no-baseline", "--no-int8", "--no-bf16", "--boot", "50",
                       "--tp-repeats", "1", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dev"]["bootstrap_units_per_source"] == {"checkcovid": 2, "covidfact": 2}
    assert report["settings"]["bootstrap_unit"] == "pairs sharing a claim or a premise"
    ci = report["per_source"]["checkcovid"]["judge_fp32"]["accuracy"]["ci95"]
    assert ci[0] <= report["per_source"]["checkcovid"]["judge_fp32"]["accuracy"]["value"] <= ci[1]


def test_kb_bench_counts_a_hit_only_for_a_fact_that_holds_the_questions_own_answer(tmp_path, embedder):
    import argparse
    import gzip
    import json

    from kb.chunking import ChunkSpec
    from server.pipeline.types import KbHit

    kb = _bench("kb")
    boilerplate = "The table below lists how often each symptom is seen in people with this condition."
    generic = "This condition is inherited in an autosomal dominant pattern."
    rows = [  # MedQuAD-like: ids repeat across sites, pages share boilerplate, whole answers repeat
        {"doc_id": "1", "url": "https://a.example/alpha", "focus": "Alpha", "question": "Symptoms of Alpha syndrome?",
         "answer": f"Alpha syndrome is a rare disorder of the skin. {boilerplate}"},
        {"doc_id": "1", "url": "https://b.example/beta", "focus": "Beta", "question": "Symptoms of Beta syndrome?",
         "answer": f"Beta syndrome is a common disorder of the lungs. {boilerplate}"},
        {"doc_id": "2", "url": "https://a.example/gamma", "focus": "Gamma", "question": "Is Gamma inherited?",
         "answer": generic},
        {"doc_id": "3", "url": "https://a.example/delta", "focus": "Delta", "question": "Is Delta inherited?",
         "answer": generic}]
    medquad = tmp_path / "medquad.jsonl.gz"
    with gzip.open(medquad, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    args = argparse.Namespace(work=tmp_path, medquad=medquad, reuse_kb=False, chunk_chars=90, chunk_overlap=0,
                              context_chars=200)
    build, kb_dir = kb.build_section(args, embedder)
    assert build["facts"] == 5  # Delta's answer is Gamma's fact (same text, same context)
    alpha, beta, gamma, delta = kb._gold(rows, ChunkSpec(90, 0, 200), kb_dir)
    assert len(alpha) == len(beta) == 2 and alpha.isdisjoint(beta)
    assert gamma == delta and len(gamma) == 1

    # Beta's copy of the boilerplate is not Alpha's answer, though its text is one of Alpha's chunks
    import sqlite3

    from kb.layout import current_version

    con = sqlite3.connect(current_version(kb_dir) / "facts.sqlite")
    fact = {(text, source): fact_id for fact_id, text, source in con.execute("SELECT fact_id, text, source FROM facts")}
    con.close()
    alpha_copy, beta_copy = fact[boilerplate, rows[0]["url"]], fact[boilerplate, rows[1]["url"]]
    assert alpha_copy in alpha and beta_copy in beta
    other = KbHit(beta_copy, boilerplate, rows[1]["url"], "Beta", 1.0)
    own = KbHit(alpha_copy, boilerplate, rows[0]["url"], "Alpha", 0.9)
    assert kb.hit_rank([other], alpha) is None
    assert kb.hit_rank([other, own], alpha) == 2
    kept = KbHit(fact[generic, rows[2]["url"]], generic, rows[2]["url"], "Gamma", 1.0)
    assert kb.hit_rank([kept], delta) == 1  # Delta's answer, stored once under Gamma's page
