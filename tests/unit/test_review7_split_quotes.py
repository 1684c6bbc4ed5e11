"""Quoted lines ("> ...", as models quote the question or a guideline) are sentences of their own.

Before, a line opening with "> " never started a sentence, so "> Hyperkalemia causes peaked T waves.\\n> So the
answer is C." was one claim; its "the answer is" made it NO_KNOWLEDGE and the fact was never judged.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


def _claims(text: str) -> list[str]:
    return [c.text for s in SPLITTER.split(text).steps for c in s.claims]


def test_each_quoted_sentence_is_a_claim():
    step = SPLITTER.split("> Hyperkalemia causes peaked T waves.\n> So the answer is C.").steps[0]
    assert [c.text for c in step.claims] == ["Hyperkalemia causes peaked T waves.", "So the answer is C."]
    assert [c.no_knowledge for c in step.claims] == [False, True]


@pytest.mark.parametrize("text, claims", [
    ("> A 45-year-old man has chest pain.\n> Which is the best next step?",
     ["A 45-year-old man has chest pain.", "Which is the best next step?"]),
    ("> The patient has a fever\n> and a cough.", ["The patient has a fever\n> and a cough."]),  # one sentence
    ("We need x\n> 5 for this.", ["We need x\n> 5 for this."]),  # a comparison, not a quote
    ("[ ; stack: [\n> ; stack: empty", ["[ ; stack: [\n> ; stack: empty"]),
])
def test_a_quote_mark_starts_a_sentence_only_before_one(text, claims):
    assert _claims(text) == claims
