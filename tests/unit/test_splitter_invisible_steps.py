"""A paragraph split sentence by sentence never yields a step that shows nothing: a control or zero-width character
after its last sentence became a step of its own (found by the re-splitting property), which alone splits into no
step at all."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter
from server.pipeline.validation import has_visible_content

RUN_ON = "Metformin is first-line. " * 7


@pytest.mark.parametrize("invisible", ["\x1b", "\u200b", "\x00", "\ufeff\u2060"])
def test_no_step_of_invisible_characters_after_a_run_on_paragraph(invisible):
    splitter = RuleSplitter()
    text = RUN_ON + invisible + " "
    steps = splitter.split(text).steps
    assert len(steps) == 7
    assert all(has_visible_content(s.text) for s in steps)
    for step in steps:  # every step splits into itself again
        assert [(s.start, s.end) for s in splitter.split(step.text).steps] == [(0, len(step.text))]


def test_an_invisible_character_inside_the_text_stays_where_it_was():
    text = RUN_ON + "Aspirin\u200b inhibits COX-1."
    steps = RuleSplitter().split(text).steps
    assert steps[-1].text == "Aspirin\u200b inhibits COX-1."
