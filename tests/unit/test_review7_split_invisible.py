"""An invisible format character between a sentence end and the space after it does not join two sentences.

Before, "Aspirin inhibits COX.\\u200b So the answer is B." (a zero-width space, as text copied from a web page
carries, or a bidi mark of right-to-left writing) was one claim; its "the answer is" made it NO_KNOWLEDGE and
the fact was never judged.
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


@pytest.mark.parametrize("mark", ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202c", "\u2060", "\u2069",
                                  "\ufeff", "\u200b\u200f"])
def test_a_sentence_ends_before_an_invisible_mark_and_a_space(mark):
    text = f"Aspirin irreversibly inhibits COX-1.{mark} So the answer is B."
    claims = SPLITTER.split(text).steps[0].claims
    assert [c.text for c in claims] == [f"Aspirin irreversibly inhibits COX-1.{mark}", "So the answer is B."]
    assert [c.no_knowledge for c in claims] == [False, True]
    for c in claims:
        assert text[c.start:c.end] == c.text


def test_an_abbreviation_before_an_invisible_mark_is_still_not_a_sentence_end():
    text = "Give it i.v.\u200b Then recheck potassium levels."
    assert [c.text for c in SPLITTER.split(text).steps[0].claims] == [text]
