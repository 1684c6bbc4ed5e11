"""The training script's negation augmentation: the rule negates only where it is safe and flips labels by logic."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "training"))
import train_nli_judge as T  # noqa: E402


@pytest.mark.parametrize("claim,negated", [
    ("Lithium is cleared mainly by the liver.", "Lithium is not cleared mainly by the liver."),
    ("Lithium is not metabolized by the liver.", "Lithium is metabolized by the liver."),
    ("COVID-19 can spread through aerosols.", "COVID-19 cannot spread through aerosols."),
    ("Masks have been shown to work.", "Masks have not been shown to work."),
    ("Patients who were vaccinated are less likely to die.", None),  # the first auxiliary is in a relative clause
    ("There was no partisanship in the decision.", None),  # another negation word
    ("He had a bad season.", None),  # "had" as a main verb
    ("Masks don't work.", None),
    ("Hydroxychloroquine reliably mitigates severity.", None),  # no auxiliary
])
def test_negate(claim, negated):
    assert T.negate(claim) == negated


def test_negated_rows_flip_support_and_contradiction_and_keep_undecided_pairs():
    rows = [{"id": f"vitaminc:{i}", "source": "vitaminc", "premise": "p", "hypothesis": "X is Y.", "label": label}
            for i, label in enumerate(T.LABELS)]
    rows += [{"id": "citint:0", "source": "citint", "premise": "p", "hypothesis": "X is Y.", "label": "contradicted"},
             {"id": "scifact:0", "source": "scifact", "premise": "p", "hypothesis": "X is Y.", "label": "supported"}]
    out = T.negation_rows(rows, 1.0, 13)
    assert [(r["id"], r["hypothesis"], r["label"]) for r in out] == [
        ("vitaminc:0#neg", "X is not Y.", "contradicted"), ("vitaminc:1#neg", "X is not Y.", "supported"),
        ("vitaminc:2#neg", "X is not Y.", "not_enough_info")]  # citint's and scifact's labels are not logical ones
    assert T.negation_rows(rows, 0.0, 13) == []
