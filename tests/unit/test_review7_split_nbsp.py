"""A no-break space after a list marker, "#" or "Step" (text converted from HTML) counts as a space.

Before, "1.\\xa0Metformin ...\\n2.\\xa0It lowers ..." was one step instead of a numbered list, and the bullets of
"-\\xa0..." lines were glued into one claim ("Metformin is first-line.\\n-\\xa0It lowers glucose.").
"""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter

SPLITTER = RuleSplitter()


@pytest.mark.parametrize("text, claims", [
    ("1.\xa0Metformin is first-line.\n2.\xa0It lowers glucose.\n3.\xa0So the answer is B.",
     [["Metformin is first-line."], ["It lowers glucose."], ["So the answer is B."]]),
    ("-\xa0Metformin is first-line.\n-\xa0It lowers glucose.", [["Metformin is first-line."], ["It lowers glucose."]]),
    ("Step\xa01: Metformin is first-line.\nStep\xa02: It lowers glucose.",
     [["Metformin is first-line."], ["It lowers glucose."]]),
    ("##\xa0Answer\nB", [["B"]]),
])
def test_a_no_break_space_after_a_marker_is_a_space(text, claims):
    steps = SPLITTER.split(text).steps
    assert [[c.text for c in s.claims] for s in steps] == claims
    for step in steps:
        assert [s.text for s in SPLITTER.split(step.text).steps] == [step.text]  # idempotent
