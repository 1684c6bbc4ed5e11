"""A bold line that is a sentence states what it says: it is a claim and a step, not a title.

Before, "**Hyperkalemia causes peaked T waves.**" standing alone was taken for a title: it had no claim (the
fact was never judged) and was glued to the paragraph after it ("So the answer is C."), a NO_KNOWLEDGE step.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def test_a_bold_sentence_is_a_step_with_its_claim():
    text = ("The ECG shows peaked T waves.\n\n**Hyperkalemia causes peaked T waves.**\n\n"
            "So the answer is C.")
    steps = SPLITTER.split(text).steps
    assert [s.text for s in steps] == ["The ECG shows peaked T waves.", "**Hyperkalemia causes peaked T waves.**",
                                       "So the answer is C."]
    assert [c.text for c in steps[1].claims] == ["Hyperkalemia causes peaked T waves."]
    assert not steps[1].no_knowledge
    for step in steps:
        assert [s.text for s in SPLITTER.split(step.text).steps] == [step.text]  # idempotent


@pytest.mark.parametrize("text, claims", [
    ("**Insulin is the first-line treatment of DKA.**", ["Insulin is the first-line treatment of DKA."]),
    ("__Insulin lowers serum potassium!__\nSo the answer is C.",
     ["Insulin lowers serum potassium!", "So the answer is C."]),
    ("**Final Answer**\nB", ["B"]),  # a title is still no claim
    ("**Conclusion.**\nSo the answer is C.", ["So the answer is C."]),
    ("**Step 1.**\nMetformin is a biguanide.", ["Metformin is a biguanide."]),
])
def test_titles_are_dropped_and_bold_sentences_kept(text, claims):
    assert [c.text for s in SPLITTER.split(text).steps for c in s.claims] == claims
