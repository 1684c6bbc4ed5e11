"""Property tests of the rule splitter: offsets, coverage, determinism, idempotence."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.pipeline.splitter import RuleSplitter, sentence_spans
from server.pipeline.validation import has_visible_content

SPLITTER = RuleSplitter()

# Pieces real reasoning chains are made of, so the generator reaches the interesting rules often.
FRAGMENTS = [
    "Metformin is first-line.", "It lowers glucose and is renally cleared.", "e.g. in adults", "i.e.", "Dr. Lee",
    "vs.", "et al.", "2.5 mg/kg", "0.9% NaCl", "$x^2$", "$5 and $10", "\\(a+b\\)", "\\[x = 5\\]", "$$y=2$$",
    "```python\nx = 1\n\n# c\n```", "`code`", "<think>", "</think>", "Step 1:", "Step 2:", "1.", "2)", "- ", "* ",
    "## Heading", "**Bold**", "Final answer: 42", "Answer: B", "Next,", "Now", "However,", "So the answer is B.",
    "Let's think step by step.", "5! = 120", "\\begin{align} a &= b \\end{align}", "---", "(a)", "A.", "?", "!",
    "...", ":", ";", ",", "and", "x", "The", "we", "=", "(", ")", "[", "]", "{", "}", "\\", "$",
]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\t", "\n \n", "\r\n", ""]

chain_text = st.lists(
    st.tuples(st.sampled_from(FRAGMENTS) | st.text(max_size=12), st.sampled_from(SEPARATORS)),
    max_size=40,
).map(lambda parts: "".join(a + b for a, b in parts))

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _blank(piece: str) -> bool:
    return piece.strip() == ""


def _check_spans(text: str, spans: list[tuple[int, int]], gap=_blank) -> None:
    """Spans in order, trimmed, and nothing but what gap accepts between and around them."""
    previous_end = 0
    for start, end in spans:
        assert 0 <= previous_end <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        assert gap(text[previous_end:start])
        previous_end = end
    assert gap(text[previous_end:])


@PROPERTY
@given(chain_text)
def test_steps_cover_every_character_once_in_order(text):
    result = SPLITTER.split(text)
    # nothing visible between steps: a paragraph of zero-width or control characters only is not a step
    _check_spans(text, [(s.start, s.end) for s in result.steps], gap=lambda piece: not has_visible_content(piece))
    assert all(has_visible_content(s.text) for s in result.steps)
    assert [s.index for s in result.steps] == list(range(len(result.steps)))
    for step in result.steps:
        assert step.text == text[step.start:step.end]
        for claim in step.claims:
            assert step.start <= claim.start < claim.end <= step.end
            assert claim.text == text[claim.start:claim.end]
        ends = [c.start for c in step.claims]
        assert ends == sorted(ends)
        for a, b in zip(step.claims, step.claims[1:]):
            assert a.end <= b.start  # claims never overlap


@PROPERTY
@given(chain_text)
def test_splitting_is_deterministic(text):
    assert SPLITTER.split(text) == RuleSplitter().split(text)


@PROPERTY
@given(chain_text)
def test_resplitting_a_step_gives_that_step(text):
    for step in SPLITTER.split(text).steps:
        again = SPLITTER.split(step.text)
        assert [(s.start, s.end) for s in again.steps] == [(0, len(step.text))], step.text
        assert [(c.start, c.end) for c in again.steps[0].claims] == [
            (c.start - step.start, c.end - step.start) for c in step.claims
        ]


@PROPERTY
@given(st.lists(chain_text, min_size=1, max_size=6))
def test_pre_split_steps_keep_their_offsets(steps):
    result = SPLITTER.split_steps(steps)
    assert result.chain_text == "\n".join(steps)
    offset = 0
    for raw, step in zip(steps, result.steps):
        assert step.text == raw.strip()
        assert offset <= step.start <= step.end <= offset + len(raw)
        offset += len(raw) + 1


@PROPERTY
@given(chain_text)
def test_sentence_spans_are_ordered_and_cover_the_text(text):
    spans = sentence_spans(text, 0, len(text))
    _check_spans(text, spans)


def test_whitespace_only_text_has_no_steps():
    assert SPLITTER.split(" \n\t\n ").steps == ()


def test_every_claim_keeps_its_letters():
    text = "Warfarin is a vitamin K antagonist and is reversed by vitamin K; heparin is reversed by protamine."
    claims = SPLITTER.split(text).steps[0].claims
    joined = re.sub(r"\W", "", "".join(c.text for c in claims))
    assert joined and joined in re.sub(r"\W", "", text).replace("and", "", 1)


# The single regexes the linear scanners replaced (quadratic on openers without closers, runs of marks).
_PREVIOUS_REGION = re.compile(
    r"(?=[`~$\\])"
    r"(?:(?P<code>```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z))"
    r"|(?P<display>\$\$.+?\$\$|\\\[.+?\\\]|\\begin\{(?P<env>[A-Za-z*]+)\}.*?\\end\{(?P=env)\})"
    r"|\\\(.+?\\\)"
    r"|(?<![\\$])\$(?=[^\s$])[^$\n]{0,300}?(?<=[^\s\\$])\$(?!\d)"
    r"|`[^`\n]+`)",
    re.DOTALL,
)
_PREVIOUS_CUT = re.compile(r"[.!?…]+[\"'”’)\]*_]*(?=\s)|\n")
_PREVIOUS_CONJ = re.compile(r"(?P<comma>,)?\s+(?P<word>and|but|whereas|while)\s+|(?P<semi>;)\s+|,\s+(?P<so>so|yet)\s+")
_PREVIOUS_TRAIL = re.compile(r"(?:\*\*|__|</?think>|\s)+$", re.IGNORECASE)
MARKUP = ["```", "~~~", "$$", "$", "\\[", "\\]", "\\(", "\\)", "\\begin{align}", "\\end{align}", "\\begin{eq}",
          "\\end{eq}", "`", "x", " ", "\n", "5", ".", "...", "?!", "\"", ")", "…", "**", "_", "and", "but", ", ", ";",
          "so", "yet", "while", "<think>", "</THINK>", "*", "__", "\t"]
markup_text = st.lists(st.sampled_from(MARKUP) | st.text(alphabet="$\\`~.!? \n)x", max_size=4), max_size=60).map("".join)


@PROPERTY
@given(markup_text | chain_text)
def test_protected_regions_and_sentence_cuts_are_those_of_the_previous_regexes(text):
    from server.pipeline.splitter import _CUT, Regions

    regions = Regions(text)
    previous = [(m.start(), m.end(), bool(m.group("display"))) for m in _PREVIOUS_REGION.finditer(text)]
    assert list(zip(regions.starts, regions.ends)) == [(a, b) for a, b, _ in previous]
    assert regions.display_ends == [b for _, b, display in previous if display]
    assert [m.span() for m in _CUT.finditer(text)] == [m.span() for m in _PREVIOUS_CUT.finditer(text)]


@PROPERTY
@given(markup_text | chain_text, st.integers(0, 5))
def test_conjunctions_and_trailing_markup_are_those_of_the_previous_regexes(text, start):
    from server.pipeline.claims import _CONJ, _trail_start

    start = min(start, len(text))
    while start and text[start - 1].isspace():  # units are trimmed: a scan never starts inside a run of spaces
        start -= 1
    assert [(m.span(), m.groupdict()) for m in _CONJ.finditer(text, start)] == \
        [(m.span(), m.groupdict()) for m in _PREVIOUS_CONJ.finditer(text, start)]
    previous = _PREVIOUS_TRAIL.search(text, start)
    assert _trail_start(text, start, len(text)) == (previous.start() if previous else len(text))
