"""The LLM judge's evidence budget covers everything the evidence list puts in the prompt: numbers, titles and
line breaks as well as the passages' text (titles used to come on top of it, unbounded in their number)."""

import pytest

from server.backends.judges import prompts
from server.pipeline.types import Evidence, EvidenceOrigin

LONG_TITLE = "Journal of Very Long Titles: " + "a systematic review and meta-analysis " * 10


def _items(n, text, title=LONG_TITLE):
    return [Evidence(f"f{i}", text, "", title, 0.5, EvidenceOrigin.KNOWLEDGE_BASE) for i in range(n)]


@pytest.mark.parametrize("items", [_items(20, "word " * 5_000), _items(400, "Short fact about warfarin."),
                                   _items(60, "word " * 120)])
def test_the_evidence_list_stays_within_its_budget_titles_included(items):
    text = prompts.format_evidence(items, "warfarin")
    assert len(text) <= prompts.MAX_PROMPT_EVIDENCE_CHARS
    assert text.startswith("[1] (Journal of Very Long Titles") and text.count("\n") >= 1


def test_items_that_fit_are_all_shown_whole():
    items = _items(3, "Warfarin inhibits vitamin K epoxide reductase.", title="Pharmacology")
    text = prompts.format_evidence(items, "warfarin")
    assert text.splitlines() == [f"[{i}] (Pharmacology) Warfarin inhibits vitamin K epoxide reductase."
                                 for i in (1, 2, 3)]


def test_an_item_is_left_out_rather_than_shown_as_a_stub():
    first = _items(1, "word " * 2_000, title="")
    rest = _items(30, "word " * 2_000, title="")
    lines = prompts.format_evidence(first + rest, "x").splitlines()
    assert all(len(line) > prompts.MIN_EXCERPT_CHARS for line in lines)
