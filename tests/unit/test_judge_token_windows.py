"""The embedded judge reads evidence the model can see whole: windows are fitted to the model's token budget for
each claim, so dense text (lab values, CJK, chemical names: many tokens per character) is not cut off silently
by the model's 256-token input."""

from __future__ import annotations

import pytest

from server.backends.judges.aggregation import AggregationPolicy, split_to_fit
from server.backends.judges.embedded import EmbeddedJudge
from server.backends.judges.nli_model import NliModel
from server.pipeline.deadline import Deadline
from server.pipeline.runtime import Blocking
from server.pipeline.types import Evidence, EvidenceOrigin, JudgeItem, Verdict

LABS = ("Na 138 mmol/L; K 4.1 mmol/L; Cl 102 mmol/L; HCO3 24 mmol/L; BUN 14 mg/dL; Cr 0.9 mg/dL; "
        "Glu 96 mg/dL; Ca 9.4 mg/dL; Mg 2.0 mg/dL; PO4 3.5 mg/dL; AST 22 U/L; ALT 19 U/L; ALP 71 U/L; "
        "TBil 0.6 mg/dL; Alb 4.2 g/dL; TP 7.1 g/dL; WBC 6.3 x10^9/L; Hgb 13.8 g/dL; Hct 41.2%; "
        "Plt 245 x10^9/L; MCV 89 fL; RDW 12.9%; INR 1.0; aPTT 29 s; TSH 1.8 mIU/L; fT4 1.2 ng/dL; "
        "CRP 2.1 mg/L; ESR 11 mm/h; LDH 162 U/L; CK 98 U/L; TnI <0.01 ng/mL; BNP 35 pg/mL; "
        "pH 7.41; pCO2 39 mmHg; pO2 94 mmHg; SaO2 98%; Lac 1.1 mmol/L; NH3 28 umol/L; Lip 31 U/L; "
        "HbA1c 5.4%; LDL 2.6 mmol/L; HDL 1.4 mmol/L; TG 1.2 mmol/L.")
DENIAL = "Penicillin was not discovered by Alexander Fleming; Fleming never worked on penicillin."
CLAIM = "Fleming discovered penicillin."
# CJK: one token per character, so a window of 700 characters is ~700 tokens
CJK = "".join(f"第{i}号病人的血压正常，心率每分钟七十二次，没有发热。" for i in range(30)) + "青霉素不是弗莱明发现的。"


@pytest.fixture(scope="module")
def model():
    return NliModel.load(quantize=False)


class Recording:
    """The NLI model, recording every premise it is asked to score."""

    def __init__(self, model):
        self.model, self.name, self.premises = model, model.name, []
        self.count_tokens, self.premise_budgets = model.count_tokens, model.premise_budgets

    def predict_proba(self, pairs):
        self.premises.extend(p for p, _ in pairs)
        return self.model.predict_proba(pairs)


@pytest.mark.parametrize("passage", [LABS + " " + DENIAL, CJK])
async def test_every_scored_premise_fits_the_models_budget_and_the_end_is_read(model, passage):
    assert len(passage) <= AggregationPolicy.window_chars or passage is CJK
    assert model.count_tokens([passage])[0] > model.premise_budget(CLAIM)  # the model would cut it
    scorer = Recording(model)
    judge = EmbeddedJudge(scorer, Blocking(None))
    await judge.judge([JudgeItem(CLAIM, (Evidence("p", passage, "", "", 0.9, EvidenceOrigin.CONTEXT),))], Deadline())
    budget = model.premise_budget(CLAIM)
    assert max(model.count_tokens(scorer.premises)) <= budget
    last_sentence = passage.rstrip("。.").rsplit(". " if passage is not CJK else "。", 1)[-1]
    assert any(last_sentence in premise for premise in scorer.premises)


async def test_a_contradiction_past_the_models_input_is_found(model):
    judge = EmbeddedJudge(model, Blocking(None))
    evidence = (Evidence("labs", LABS + " " + DENIAL, "", "", 0.9, EvidenceOrigin.CONTEXT),)
    [judgement] = await judge.judge([JudgeItem(CLAIM, evidence)], Deadline())
    # (with the passage as one window the model read only the lab values and called the claim supported)
    assert judgement.verdict is Verdict.CONTRADICTED


def test_split_to_fit_keeps_every_word_in_order_within_the_budget():
    def count(texts):  # a token per word
        return [len(t.split()) for t in texts]

    text = " ".join(f"w{i}" for i in range(100)) + ". " + " ".join(f"v{i}" for i in range(30)) + "."
    pieces = split_to_fit(text, 130, 12, count)
    assert max(count(pieces)) <= 12
    assert " ".join(pieces).split() == text.split()
    assert split_to_fit(text, 130, 0, count) == []


async def test_a_dense_passage_of_nearly_the_longest_allowed_length_is_read_to_its_end(model):
    # 9,000 characters of CJK are ~13 windows of 700 characters and ~40 pieces that fit the model: keeping only
    # the first 30 pieces per passage left the denial at its end unread
    passage = "".join(f"第{i}号病人的血压正常，心率每分钟七十二次，没有发热。" for i in range(360)) + "青霉素不是弗莱明发现的。"
    assert 8_500 < len(passage) <= 10_000
    scorer = Recording(model)
    judge = EmbeddedJudge(scorer, Blocking(None))
    await judge.judge([JudgeItem(CLAIM, (Evidence("p", passage, "", "", 0.9, EvidenceOrigin.CONTEXT),))], Deadline())
    assert len(scorer.premises) > AggregationPolicy().max_windows
    assert max(model.count_tokens(scorer.premises)) <= model.premise_budget(CLAIM)
    assert any("青霉素不是弗莱明发现的" in premise for premise in scorer.premises)