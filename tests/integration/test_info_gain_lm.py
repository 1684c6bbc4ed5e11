"""InfoGain on a real server with KGV_LM__BACKEND=transformers and a tiny model, over gRPC and `kgverify batch`."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from client import AsyncVerifierClient, VerifierError  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.helpers.tiny_lm import chain, load_tiny_lm, one_torch_thread, tiny_lm_path  # noqa: E402

STYLE = "gpt2"
QUESTION = "Question: which drug lowers the blood glucose?"
_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def contexts(question: str, steps: list[str]) -> list[str]:
    out = [question]
    for step in steps:
        out.append(out[-1] + "\n" + step)
    return out


def direct_nll(question: str, steps: list[str], target: str) -> list[float]:
    """L_i from one independent forward pass per prefix, with the pinned tokenization."""
    model, tok = load_tiny_lm(STYLE)
    answer = tok(" " + target, add_special_tokens=False)["input_ids"]
    out = []
    for context in contexts(question, steps):
        prefix = tok(context + " Answer:")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prefix + answer])).logits[0].float(), -1)
        out.append(-sum(logp[len(prefix) - 1 + j, a].item() for j, a in enumerate(answer)))
    return out


def direct_ppl(question: str, steps: list[str], target: str) -> list[float]:
    """The reference formula's PPL_i: c_i + " Answer: " + A, every token after the first."""
    model, tok = load_tiny_lm(STYLE)
    out = []
    for context in contexts(question, steps):
        ids = tok(context + " Answer: " + target)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        out.append(math.exp(-sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids))) / (len(ids) - 1)))
    return out


@pytest.fixture(scope="module")
async def lm_server(tmp_path_factory):
    from server.app import start_server

    settings = make_settings(tmp_path_factory.mktemp("kgv-lm-cache"), kb={"enabled": False},
                             lm={"backend": "transformers", "model": str(tiny_lm_path(STYLE))})
    server = await start_server(settings, ["127.0.0.1:0"])
    await server.wait_ready(300)
    yield server
    await server.stop(0)


async def test_score_info_gain_returns_the_models_exact_values(lm_server):
    steps = chain(6, seed=21)
    async with AsyncVerifierClient(lm_server.addresses[0]) as client:
        result = await client.score_info_gain(question=QUESTION, steps=steps, answer="metformin",
                                              gold_answer="insulin", estimator="lm")
    L = direct_nll(QUESTION, steps, "insulin")
    assert result.estimator == "lm" and result.target == "gold_answer" and result.target_text == "insulin"
    assert result.provenance["estimator"] == f"lm:transformers:{tiny_lm_path(STYLE)}"
    assert result.nll_initial == pytest.approx(L[0], abs=1e-4)
    assert [s.nll for s in result.steps] == pytest.approx(L[1:], abs=1e-4)
    assert [s.gain for s in result.steps] == pytest.approx([L[i - 1] - L[i] for i in range(1, 7)], abs=1e-4)
    assert result.info_gain == pytest.approx((L[0] - L[6]) / 6, abs=1e-4)
    assert result.answer_tokens == len(load_tiny_lm(STYLE)[1](" insulin", add_special_tokens=False)["input_ids"])
    assert 0 < result.prefill_tokens and result.status == "ok"


async def test_paper_mode_over_grpc_equals_the_reference_formula(lm_server):
    steps = chain(4, seed=22)
    async with AsyncVerifierClient(lm_server.addresses[0]) as client:
        result = await client.score_info_gain(question=QUESTION, steps=steps, answer="insulin", mode="paper",
                                              units="bits")
    ppl = direct_ppl(QUESTION, steps, "insulin")
    assert result.info_gain_paper == pytest.approx(sum(ppl[i - 1] - ppl[i] for i in range(1, 5)) / 5, rel=1e-4)
    assert [s.perplexity_paper for s in result.steps] == pytest.approx(ppl[1:], rel=1e-4)
    L = direct_nll(QUESTION, steps, "insulin")
    assert result.info_gain == pytest.approx((L[0] - L[4]) / 4 / math.log(2), abs=1e-4)


async def test_paper_mode_reaches_the_record_and_the_summary_line_with_its_reason(lm_server):
    """evaluate --paper printed no paper value, and its --json (the batch record) had no reason for a null one,
    no PPL_0 and no per-step perplexities."""
    from client.render import summary_line

    async with AsyncVerifierClient(lm_server.addresses[0]) as client:
        long = await client.score_info_gain(question=QUESTION, steps=chain(4, seed=22), answer="insulin",
                                            mode="paper")
        short = await client.score_info_gain(question=QUESTION, steps=chain(2, seed=22), answer="insulin",
                                             mode="paper")
        plain = await client.score_info_gain(question=QUESTION, steps=chain(4, seed=22), answer="insulin")
    ppl = direct_ppl(QUESTION, chain(4, seed=22), "insulin")
    record = long.to_record("a")
    assert record["info_gain_paper"] == pytest.approx(long.info_gain_paper)
    assert record["perplexity_paper_initial"] == pytest.approx(ppl[0], rel=1e-4)
    assert [s["perplexity_paper"] for s in record["steps"]] == pytest.approx(ppl[1:], rel=1e-4)
    assert "info_gain_paper_reason" not in record
    assert f"InfoGain (paper formula) {long.info_gain_paper:+.2f}" in summary_line(long)
    record = short.to_record("b")
    assert record["info_gain_paper"] is None and "<= 2 steps" in record["info_gain_paper_reason"]
    assert "InfoGain (paper formula) - (" in summary_line(short) and "<= 2 steps" in summary_line(short)
    record = plain.to_record("c")  # not asked for: nothing of it
    assert not {"info_gain_paper_reason", "perplexity_paper_initial"} & set(record)
    assert all("perplexity_paper" not in s for s in record["steps"]) and "paper formula" not in summary_line(plain)


async def test_nli_estimator_is_named_and_has_no_paper_mode(lm_server):
    async with AsyncVerifierClient(lm_server.addresses[0]) as client:
        result = await client.score_info_gain(question=QUESTION, steps=chain(2), answer="insulin", estimator="nli")
        assert result.estimator == "nli" and result.provenance["estimator"].startswith("nli:")
        with pytest.raises(VerifierError) as info:
            await client.score_info_gain(question=QUESTION, steps=chain(3), answer="insulin", estimator="nli",
                                         mode="paper")
        assert info.value.code == "INVALID_ARGUMENT" and info.value.field_violations[0][0] == "options.mode"
        with pytest.raises(VerifierError) as info:  # through ScoreChain the field is its info_gain_options
            await client.score_chain(question=QUESTION, steps=chain(3), answer="insulin", estimator="nli",
                                     mode="paper")
        assert info.value.field_violations[0][0] == "info_gain_options.mode"
        with pytest.raises(VerifierError) as info:  # was ignored: gains came back per chain, not per token
            await client.score_info_gain(question=QUESTION, steps=chain(3), answer="insulin", estimator="nli",
                                         per_token=True)
        assert info.value.field_violations[0][0] == "options.per_token"


def test_kgverify_batch_scores_infogain_with_the_transformers_backend(tmp_path, monkeypatch):
    from client.cli import main

    rows = [{"id": "a", "question": QUESTION, "steps": chain(3, seed=31), "answer": "insulin"},
            {"id": "b", "question": QUESTION, "steps": chain(5, seed=32), "answer": "aspirin",
             "gold_answer": "metformin"}]
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("KGV_LM__BACKEND", "transformers")
    monkeypatch.setenv("KGV_LM__MODEL", str(tiny_lm_path(STYLE)))
    monkeypatch.setenv("KGV_KB__ENABLED", "false")
    monkeypatch.setenv("KGV_KB__CACHE_DIR", str(tmp_path / "cache"))
    assert main(["batch", "--input", str(source), "--output", str(output), "--metrics", "infogain",
                 "--estimator", "lm", "--no-progress"]) == 0
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    for row in rows:
        record = records[row["id"]]
        target = row.get("gold_answer") or row["answer"]
        L = direct_nll(QUESTION, row["steps"], target)
        assert record["status"] == "ok" and record["estimator"] == "lm"
        assert [s["nll"] for s in record["steps"]] == pytest.approx(L[1:], abs=1e-4)
        assert [s["gain"] for s in record["steps"]] == pytest.approx([L[i - 1] - L[i] for i in range(1, len(L))],
                                                                     abs=1e-4)
        assert record["info_gain"] == pytest.approx((L[0] - L[-1]) / len(row["steps"]), abs=1e-4)
