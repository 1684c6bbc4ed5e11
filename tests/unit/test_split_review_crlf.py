"""Windows line breaks ("\r\n") split a chain exactly as "\n" does; a line of no-break spaces is blank."""

from __future__ import annotations

import pytest

from server.pipeline.splitter import RuleSplitter, sentence_spans

SPLITTER = RuleSplitter()

CHAINS = [
    "Metformin lowers hepatic glucose output.\n\nInsulin is a peptide hormone.\n\nSo the answer is B.",
    "<think>\nMetformin lowers glucose.\n</think>\n\nSo the answer is B.",
    "## Analysis\nMetformin lowers glucose.\n\n---\n\nThe answer is B.",
    "The options are:\nA. Metformin\nB. Insulin\n\nMetformin is first-line.\nSo the answer is A.",
    "We need the area:\n\\[ A = \\pi r^2 \\]\nNext, substitute r = 2.\n\nSo A = 4\\pi.",
]


def _shape(result):
    return [(s.text.replace("\r", ""), [c.text.replace("\r", "") for c in s.claims], s.no_knowledge)
            for s in result.steps]


@pytest.mark.parametrize("chain", CHAINS)
def test_crlf_chain_splits_like_the_lf_chain(chain):
    crlf = chain.replace("\n", "\r\n")
    result = SPLITTER.split(crlf)
    assert _shape(result) == _shape(SPLITTER.split(chain))
    for step in result.steps:
        assert crlf[step.start:step.end] == step.text
        assert all(crlf[c.start:c.end] == c.text for c in step.claims)


def test_blank_crlf_lines_separate_paragraphs():
    text = "Metformin lowers glucose.\r\n\r\nInsulin is a hormone.\r\n \r\nSo the answer is B."
    assert [s.text for s in SPLITTER.split(text).steps] == [
        "Metformin lowers glucose.", "Insulin is a hormone.", "So the answer is B."]


def test_a_crlf_line_ending_with_a_colon_continues_the_sentence():
    text = "The dose is:\r\nWeight times 2.5 mg."
    assert sentence_spans(text, 0, len(text)) == [(0, len(text))]


@pytest.mark.parametrize("blank", ["\u00a0", "\u3000", "\t\u00a0 ", "\u2009"])
def test_a_line_of_unicode_spaces_separates_paragraphs(blank):
    text = f"Metformin lowers glucose.\n{blank}\nInsulin is a hormone.\n{blank}\nSo the answer is B."
    assert [s.text for s in SPLITTER.split(text).steps] == [
        "Metformin lowers glucose.", "Insulin is a hormone.", "So the answer is B."]
