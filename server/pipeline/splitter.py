"""Rule-based step splitter (the embedded default): think blocks, paragraphs, list items, run-on sentences.

Every step and claim is a [start, end) span of the chain text with no leading
or trailing whitespace; steps never overlap and together cover every
visible character of the chain (a paragraph of zero-width or control
characters only is not a step). Splitting is idempotent: splitting the
text of any output step gives back that one step. The rules are documented in
docs/splitting.md.
"""

from __future__ import annotations

import bisect
import re
from typing import Sequence

from .claims import bold_sentence, claim_spans, finite_verb
from .no_knowledge import NoKnowledgeDetector
from .types import Claim, SplitResult, Step
from .validation import has_visible_content

SPLITTER_NAME = "rules/2"
# A paragraph is a run-on (one step per sentence unit) when its units weigh more than RUN_ON_WEIGHT:
# each unit weighs 1, a unit opening with a step cue ("Next, ...") 1 + CUE_WEIGHT, a weak start ("This ...") 0.
RUN_ON_WEIGHT = 7
CUE_WEIGHT = 3

# Spans where no boundary may fall: code, display math, inline math. At each opener, in this order: a code
# fence (to its closing fence or the end), display math ($$…$$, \[…\], \begin{env}…\end{env}), inline
# \(…\), inline $…$ (at most 300 characters, one line) and `code`. Regions scans them in linear time: the
# closers are found with str.find and remembered, so a thousand openers without a closer cost one scan
# (the lazy `\(.+?\)` of a single regex rescanned to the end from every opener: quadratic).
_OPENER = re.compile(r"```|~~~|\$\$|\\\[|\\begin\{(?P<env>[A-Za-z*]+)\}|\\\(|\$|`")
_INLINE_DOLLAR = re.compile(r"(?<![\\$])\$(?=[^\s$])[^$\n]{0,300}?(?<=[^\s\\$])\$(?!\d)")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_CLOSERS = {"$$": "$$", "\\[": "\\]", "\\(": "\\)"}
# A line of any spaces is blank: "\r" (Windows line breaks, "\r\n\r\n"), tabs, no-break spaces ("\n\xa0\n" from HTML).
_BLANK = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)*")
_TAG = re.compile(r"<think>|</think>|(?m:^[ \t]*(?:-{3,}|\*{3,}|_{3,}|={3,})[ \t\r]*$)", re.IGNORECASE)
# A no-break space (text converted from HTML) after a list marker, "#" or "Step" counts as a space; any space but a
# line break may indent them (a step is trimmed of all spaces: re-split, it must start the same way).
# Section starts: headings, bold labels, "Step k", answer lines. List items start steps only in a list paragraph.
_SECTION = (r"[^\S\n]*(?:#{1,6}[ \t\xa0]|\*\*\S|__\S|step[ \t\xa0]*\d{1,3}\b|(?:final[ \t]+)?answer[ \t]*[:：]"
            r"|final[ \t]+answer\b)")
# Roman numerals of list labels ("ii.", "(iv)", "III."); a single "i", "v" or "x" is a letter label already.
ROMAN = r"(?i:i{2,3}|iv|vi{1,3}|ix|xi{1,3})"
_LIST = rf"[^\S\n]*(?:[-*+•][ \t\xa0]|\(?\d{{1,3}}[.)][ \t\xa0]|\(?(?:[A-Za-z]|{ROMAN})[.)][ \t\xa0])"
_ITEM_START = re.compile(rf"(?mi:^(?:(?P<section>(?={_SECTION}))|(?={_LIST})))")
# "Step k:" inside a line (after text, not after a heading or list marker) also starts a step.
_INLINE_STEP = re.compile(r"Step \d{1,3}:")
_HEADING = re.compile(r"[^\S\n]*(?:#{1,6}[ \t\xa0].*|\*\*[^*\n]+\*\*[ \t]*:?|__[^_\n]+__[ \t]*:?"
                      r"|(?:\*\*)?step[ \t\xa0]*\d{1,3}\b[^\n]{0,60}(?<![.!?]))[ \t]*", re.IGNORECASE)
# Sentence ends (punctuation followed by whitespace) and line breaks: candidate unit boundaries.
# Possessive runs that start at the run's first mark: linear time on any run of marks (a backtracking
# `[.!?…]+` took seconds on 20,000 dots and froze the server's event loop with the GIL held).
# Western sentence ends need a space after them; Chinese and Japanese full stops do not (no space follows them).
_CUT = re.compile(r"(?<![.!?…])[.!?…]++[\"'”’)\]*_]*+(?=\s)|[。！？]++[」』）\"”’]*+|\n")
# Invisible format characters (zero-width space and joiners, bidi marks, word joiner, BOM) between a sentence end and
# the space after it, as text copied from web pages and right-to-left writing carries: "COX.\u200b So ..." ends there.
INVISIBLE = "".join(map(chr, (*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065),
                                *range(0x2066, 0x206A), 0xFEFF)))
_HAS_INVISIBLE = re.compile(f"[{INVISIBLE}]")
_CUT_INVISIBLE = re.compile(rf"(?<![.!?…])[.!?…]++[\"'”’)\]*_]*+[{INVISIBLE}]++(?=\s)")
_TOKEN_BEFORE = re.compile(r"(\S+)$")
# An option letter named as the answer, right before a full stop: "the answer is B", "Answer: (C", "option **D".
_ANSWER_LETTER = re.compile(r"\b(?:answer|option|choice)\b[^.!?\n]{0,24}?[\s:(*]\(?\**[A-J]\Z", re.IGNORECASE)
_OPTION_TEXT_END = re.compile(r"[.!?…;](?=\s|\Z)|\n")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_PRONOUNS = frozenset("i you we it they he she this that these those there here let's".split())
_LIST_LABEL = re.compile(rf"\(?(?:\d{{1,3}}|[A-Za-z]|{ROMAN})\)?")
# A list label or a quote mark opening a line ("b. Metformin ...", "(ii) ...", "> The ..."): it starts a unit.
_LINE_LABEL = re.compile(rf"\(?(?:\d{{1,3}}[.)][ \t\xa0]+\S|(?:[A-Za-z]|{ROMAN})[.)][ \t\xa0]+[^\sa-z])"
                         r"|>[ \t\xa0]+(?:[A-Z\"“(]|\*\*)")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_SENTENCE_OPENER = re.compile(r"[ \t\xa0]+(?:It|Its|This|That|These|Those|The|There|He|She|They|We|His|Her|Their|"
                              r"However|Therefore|Thus|Hence|If|In|When|Because|After|Then|A|An)\b")
ABBREVIATIONS = frozenset({
    "e.g", "i.e", "eg", "ie", "dr", "mr", "mrs", "ms", "prof", "vs", "al", "fig", "figs", "approx", "cf", "resp",
    "eq", "eqs", "vol", "ca", "st", "jr", "sr", "inc", "ltd", "dept", "viz", "ref", "refs", "sec", "ch", "pp",
    "no", "nos", "esp", "max",
})
# Abbreviations only before a number ("No. 5", "max. 300 mg"); elsewhere the word ends a sentence ("over 30 min.").
_BEFORE_NUMBER = frozenset(("no", "nos", "max"))
_NO_CUT_NEXT = frozenset(",;:.!?)]}=+/<>|&^")
# Sentence starters that begin a new unit even after a formula or a number with no full stop ("... = 49 However, ...").
_CUE = re.compile(r"[)\]}$\d:][ \t\r\n]+(?P<word>[A-Z][a-z']+)\b")
CUE_WORDS = frozenset(
    "However Therefore Thus Hence So Since First Second Third Fourth Fifth Next Now Finally Then Let Let's We If "
    "For To Substituting Using Given Consider Considering Case Note Similarly Additionally Also Because After "
    "Solving Simplifying Combining Calculating This The These In".split()
)
_STEP_CUE = re.compile(r"(?:\*\*)?(?:Next|Now|Finally|Lastly|Step \d)\b")
# Units that rarely open a step (they continue the one before): they do not count towards a run-on; nor do the rows of
# a table ("| ..."), so a table is one step.
_WEAK_START = re.compile(r"[-*•] |\||\\\(|\$|(?:This|These|There|Here|Specifically|Each|Then|But|Hence)\b")
_ENUM_CUES = frozenset(("First", "Second", "Third", "Fourth", "Fifth", "Next", "Finally", "Case"))
_NO_CUT_AFTER_LINE = frozenset(":,;([{=+-*/\\&^")
_DISPLAY_OPEN = ("\\[", "$$", "\\begin")
_NOT_BEFORE_INLINE_STEP = frozenset(" \t\n\r#*_>+•-")

# Bold / underline emphasis markers (not a power "x**2"): the NO_KNOWLEDGE rules read a claim without them, so
# "**Answer:** B" is the answer line "Answer: B" (the claim's text and offsets keep them).
_EMPHASIS = re.compile(r"(?<![\w*])\*\*(?=\S)|(?<=\S)\*\*(?![\w*])|(?<![\w_])__(?=\S)|(?<=\S)__(?![\w_])")

PARA, ITEM, TITLE, OPEN, CLOSE, LIST = range(6)


class Regions:
    """Sorted, non-overlapping protected spans of a text (code, math)."""

    __slots__ = ("starts", "ends", "display_ends")

    def __init__(self, text: str):
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.display_ends: list[int] = []
        if "$" not in text and "\\" not in text and "`" not in text and "~~~" not in text:
            return
        found: dict[str, tuple[int, int]] = {}  # closer -> (searched from, found at or -1)

        def find(closer: str, start: int) -> int:
            """text.find(closer, start), reusing an earlier search that already answers it."""
            at = found.get(closer)
            if at is not None and at[0] <= start and (at[1] < 0 or start <= at[1]):
                return at[1]
            at = (start, text.find(closer, start))
            found[closer] = at
            return at[1]

        pos = 0
        while (m := _OPENER.search(text, pos)) is not None:
            end, display = self._region(text, m, find)
            if end is None:
                pos = m.start() + 1
                continue
            self.starts.append(m.start())
            self.ends.append(end)
            if display:
                self.display_ends.append(end)
            pos = end

    @staticmethod
    def _region(text: str, m: re.Match, find) -> tuple[int | None, bool]:
        """(end, is display math) of the protected span opening at m, or (None, False) when it does not close."""
        opener, start = m.group(), m.start()
        if opener in ("```", "~~~"):
            close = find(opener, start + 3)
            return (len(text) if close < 0 else close + 3), False
        if m.group("env"):
            close = find(f"\\end{{{m.group('env')}}}", m.end())
            return (None, False) if close < 0 else (close + len(m.group("env")) + 6, True)
        if opener in _CLOSERS:  # at least one character inside
            close = find(_CLOSERS[opener], start + 3)
            if close >= 0:
                return close + 2, opener != "\\("
            return None, False
        pattern = _INLINE_DOLLAR if opener == "$" else _INLINE_CODE
        inline = pattern.match(text, start)
        return (None, False) if inline is None else (inline.end(), False)

    def inside(self, pos: int) -> bool:
        """Whether a cut at pos would fall strictly inside a protected span."""
        i = bisect.bisect_right(self.starts, pos - 1) - 1
        return i >= 0 and self.ends[i] > pos


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _skip_space(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos


def _is_abbreviation(text: str, unit_start: int, dot: int, next_char: str) -> bool:
    """Whether the '.' at dot ends an abbreviation or a list label rather than a sentence."""
    if unit_start < dot and _LIST_LABEL.fullmatch(text, unit_start, dot):
        return True  # "1. First ..." or "A. Metformin" at the start of a unit
    m = _TOKEN_BEFORE.search(text, max(unit_start, dot - 24), dot)
    if not m:
        return False
    if _LIST_LABEL.fullmatch(text, m.start(1), dot) and (_at_line_start(text, unit_start, m.start(1))
                                                         or _after_cell_bar(text, unit_start, m.start(1))):
        return True  # a list label opening a line or a table cell ("The findings are:\n1. Peaked T waves ...")
    word = m.group(1).lstrip("([\"'“‘*_")
    low = word.lower()
    if low in ABBREVIATIONS:
        return low not in _BEFORE_NUMBER or next_char.isdigit()
    if _DOTTED.fullmatch(word):
        # "500 mg b.i.d. It lowers …", "approved in the U.S. The …": a dotted abbreviation ends the sentence when
        # a word that opens sentences follows; otherwise it does not ("given i.v. over 30 min", "p.o. Metformin")
        return _SENTENCE_OPENER.match(text, dot + 1) is None
    return False


def _at_line_start(text: str, unit_start: int, pos: int) -> bool:
    """Whether only spaces (at most 8, no line break) stand between the line's start and pos."""
    for _ in range(9):
        if pos <= unit_start or text[pos - 1] == "\n":
            return True
        if text[pos - 1] == "\n" or not text[pos - 1].isspace():
            return False
        pos -= 1
    return False


def _after_cell_bar(text: str, unit_start: int, pos: int) -> bool:
    """Whether pos opens a table cell: "| A. Insulin | ..." (a few spaces after the "|")."""
    for _ in range(9):
        if pos <= unit_start:
            return False
        if text[pos - 1] == "|":
            return True
        if text[pos - 1] not in " \t":
            return False
        pos -= 1
    return False


def _label_opens_line(text: str, pos: int, end: int) -> bool:
    """Whether a list label or a quote mark opens the line at pos ("b. Metformin ...", "ii) The ...", "> The ..."):
    it starts a unit (a ">" before a number or an operator continues a formula: "x\n> 5")."""
    return _LINE_LABEL.match(text, pos, end) is not None and _at_line_start(text, 0, pos) and pos > 0


BRACKET_REACH = 400  # how far back on its line a "?" looks for an unclosed "[" (bounded: the scan stays linear)


def _in_open_bracket(text: str, unit_start: int, pos: int) -> bool:
    """Whether pos follows an unclosed "[" on its line, within BRACKET_REACH characters."""
    lo = max(unit_start, pos - BRACKET_REACH)
    lo = max(lo, text.rfind("\n", lo, pos) + 1)
    return text.rfind("[", lo, pos) > text.rfind("]", lo, pos)


def _punct_cut(text: str, m: re.Match, unit_start: int, end: int) -> int | None:
    """Start of the next unit when the sentence punctuation in m ends a unit, else None."""
    nxt = _skip_space(text, m.end(), end)
    if nxt >= end:
        return None
    c = text[nxt]
    if (c.islower() or c == ">") and _label_opens_line(text, nxt, end):
        return nxt  # "... glucose.\nb. Metformin is ...": the next item of a list; "> So ...": a quoted line
    if c.islower() or c in _NO_CUT_NEXT or not _opens_unit(text, nxt, end):
        return None
    punct = m.group().rstrip(INVISIBLE)
    if punct[0] == "!" and not c.isupper():
        return None  # factorials: "5! = 120"
    if punct[0] == "?" and _in_open_bracket(text, unit_start, m.start()):
        return None  # an unknown order inside a list: '["being" ? "bellyache" ? "widen"]' (BIG-Bench word sorting)
    if punct[0] == "." and len(punct.rstrip("\"'”’)]*_")) == 1 and _is_abbreviation(text, unit_start, m.start(), c):
        return None
    if punct[0] == "." and _option_text_follows(text, unit_start, m.start(), nxt, end):
        return None
    return nxt


def _option_text_follows(text: str, unit_start: int, dot: int, nxt: int, end: int) -> bool:
    """Whether the '.' at dot closes an option letter named as the answer and its text follows: "So the answer is
    B. Metformin." is one unit ("Metformin." alone would be judged as a fact); "The answer is B. Metformin is
    first-line." is two (what follows is a sentence with its own verb)."""
    if not _ANSWER_LETTER.search(text, max(unit_start, dot - 48), dot):
        return False
    stop = _OPTION_TEXT_END.search(text, nxt, min(end, nxt + 120))
    words = _WORD.findall(text, nxt, stop.start() if stop else min(end, nxt + 120))
    # no verb, not even one the closed lists miss ("Insulin drives potassium ..."): a word after the first ending
    # in "s" may be one, so that is a sentence too (doubtful text stays a claim of its own and is judged)
    # and no sentence opener or pronoun ("B. Finally, we check it.")
    return 0 < len(words) <= 6 and not any(finite_verb(w) for w in words) and not any(
        w.endswith("s") and not w.endswith(("ss", "us", "is", "'s")) for w in words[1:]) and not (
        words[0] in CUE_WORDS and words[0] not in ("The", "In")) and _PRONOUNS.isdisjoint(w.lower() for w in words)


def _opens_unit(text: str, pos: int, end: int) -> bool:
    """Whether a unit may start at pos: not an operator, not an equation (it belongs to the text before it)."""
    c = text[pos]
    if c == "*":
        return text.startswith("**", pos, end)
    if c == "-":
        return text.startswith(("- ", "-\xa0"), pos, end)
    if c == "\\" or c == "$":
        return not text.startswith(_DISPLAY_OPEN, pos, end)
    return True


def _cue_cut(text: str, m: re.Match, unit_start: int) -> int | None:
    """A capitalised sentence starter right after a formula, a number or a colon starts a new unit."""
    if m.start() <= unit_start:
        return None
    if text[m.start()] == ")" and _LIST_LABEL.fullmatch(text, unit_start, m.start() + 1):
        return None  # a list label opening the unit ("a) The patient ...", "(1) Therefore ..."), not a sentence end
    if text[m.start()] == ":" and m.group("word") not in _ENUM_CUES:
        return None
    return m.start("word")


def _line_cut(text: str, nl: int, unit_start: int, end: int) -> int | None:
    """Start of the next unit when the line break at nl ends a unit, else None."""
    prev = nl - 1
    while prev >= unit_start and text[prev] in " \t\r":
        prev -= 1
    nxt = _skip_space(text, nl + 1, end)
    if prev < unit_start or nxt >= end:
        return None
    c = text[nxt]
    bold_end = text[prev] == "*" and prev > unit_start and text[prev - 1] == "*"
    if text[prev] == "|" and c == "|":
        return nxt  # each row of a Markdown table is a unit of its own
    if (text[prev] not in _NO_CUT_AFTER_LINE or text[prev] in ",;") and _label_opens_line(text, nxt, end):
        return nxt  # "b) Metformin ...", "2. \\(x = 1\\)" after an item that ends in "," or ";": the next item
    if (text[prev] in _NO_CUT_AFTER_LINE and not bold_end) or c.islower() or c in _NO_CUT_NEXT \
            or not _opens_unit(text, nxt, end):
        return None
    if text.startswith(_DISPLAY_OPEN, nxt, end):
        return None  # an equation on its own line continues the sentence that introduces it
    return nxt


def unit_spans(text: str, start: int, end: int, regions: Regions) -> list[tuple[int, int]]:
    """Sentence units of text[start:end]: sentences, lines that end a statement, display-math ends."""
    candidates: list[tuple[int, int, re.Match | None]] = []
    for m in _CUT.finditer(text, start, end):
        if not regions.inside(m.start()):
            candidates.append((m.end(), 0, m))
    if _HAS_INVISIBLE.search(text, start, end):
        candidates.extend((m.end(), 0, m) for m in _CUT_INVISIBLE.finditer(text, start, end)
                          if not regions.inside(m.start()))
    for m in _CUE.finditer(text, start, end):
        if m.group("word") in CUE_WORDS and not regions.inside(m.start("word")):
            candidates.append((m.start("word"), 2, m))
    if regions.display_ends:
        candidates.extend((r, 1, None) for r in _display_cuts_raw(regions, start, end))
    candidates.sort(key=lambda c: c[0])
    spans: list[tuple[int, int]] = []
    unit_start = _skip_space(text, start, end)
    for cut, kind, m in candidates:
        if cut <= unit_start:
            continue
        if kind == 1:
            nxt = _after_display(text, cut, end)
        elif kind == 2:
            nxt = _cue_cut(text, m, unit_start)
        elif m.group() == "\n":
            nxt = _line_cut(text, m.start(), unit_start, end)
        else:
            nxt = _punct_cut(text, m, unit_start, end)
        if nxt is None:
            continue
        s, e = _trim(text, unit_start, cut)
        if e > s:
            spans.append((s, e))
        unit_start = nxt
    s, e = _trim(text, unit_start, end)
    if e > s:
        spans.append((s, e))
    return spans


def _display_cuts_raw(regions: Regions, start: int, end: int) -> list[int]:
    lo = bisect.bisect_right(regions.display_ends, start)
    hi = bisect.bisect_left(regions.display_ends, end)
    return regions.display_ends[lo:hi]


def _after_display(text: str, r: int, end: int) -> int | None:
    if not text[r].isspace():
        return None
    nxt = _skip_space(text, r, end)
    if nxt >= end or text[nxt].islower() or text[nxt] in _NO_CUT_NEXT or not _opens_unit(text, nxt, end):
        return None
    return nxt


_last_regions: tuple[str, Regions] = ("", Regions(""))


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence boundaries inside text[start:end], conservative around abbreviations, decimals and math."""
    global _last_regions
    cached_text, regions = _last_regions  # callers walk one document line by line: scan it once
    if cached_text is not text and cached_text != text:
        regions = Regions(text)
        _last_regions = (text, regions)
    return unit_spans(text, start, end, regions)


def _blocks(text: str, regions: Regions) -> list[list[int]]:
    """Paragraphs, list items and think tags as [start, end, kind], in text order."""
    events: list[tuple[int, int, int, int]] = []  # (position, order, end, kind)
    for m in _BLANK.finditer(text):
        if not regions.inside(m.start()):
            events.append((m.start(), 0, m.end(), -1))
    if "<" in text or "--" in text or "**" in text or "__" in text or "==" in text:
        for m in _TAG.finditer(text):
            if not regions.inside(m.start()):
                kind = CLOSE if not m.group().lower().startswith("<think") else OPEN
                events.append((m.start(), 1, m.end(), kind))
    for m in _ITEM_START.finditer(text):
        if not regions.inside(m.start()):
            events.append((m.start(), 2, m.start(), ITEM if m.group("section") is not None else LIST))
    if "Step " in text:
        for m in _INLINE_STEP.finditer(text):
            pos = m.start() - 2 if text.startswith("**", m.start() - 2) else m.start()
            if pos >= 2 and text[pos - 1] in " \t" and text[pos - 2] not in _NOT_BEFORE_INLINE_STEP \
                    and not regions.inside(pos):
                events.append((pos, 2, pos, ITEM))
    events.sort()
    blocks: list[list[int]] = []
    cursor, kind = 0, PARA
    for pos, _, stop, ev_kind in events:
        if pos < cursor:
            continue  # inside a tag or separator already consumed
        if ev_kind == LIST and kind != LIST and text[cursor:pos].strip():
            continue  # a list inside a paragraph or section belongs to the text that introduces it
        _add_block(blocks, text, cursor, pos, kind)
        if ev_kind in (OPEN, CLOSE):
            blocks.append([*_trim(text, pos, stop), ev_kind])
            cursor, kind = stop, PARA
        elif ev_kind in (ITEM, LIST):
            cursor, kind = pos, ev_kind
        else:
            cursor, kind = stop, PARA
    _add_block(blocks, text, cursor, len(text), kind)
    return blocks


def _add_block(blocks: list[list[int]], text: str, start: int, end: int, kind: int) -> None:
    s, e = _trim(text, start, end)
    if e <= s or not has_visible_content(text[s:e]):
        return  # a paragraph of zero-width or control characters only is not a step
    if kind == ITEM and "\n" not in text[s:e] and _HEADING.fullmatch(text, s, e) and not bold_sentence(text, s, e):
        kind = TITLE  # a title joins the paragraph after it; a bold sentence is a step of its own
    blocks.append([s, e, ITEM if kind == LIST else kind])


def _attach(units: list[list[int]]) -> list[list[int]]:
    """Glues markup to content: closing tags to the unit before, opening tags to the unit after, and titles
    to the paragraph after them (a heading above a list or another heading stays a step of its own)."""
    closed: list[list[int]] = []
    for u in units:
        if u[2] == CLOSE and closed:
            closed[-1][1] = u[1]
        else:
            closed.append([u[0], u[1], OPEN if u[2] == CLOSE else u[2]])
    titled: list[list[int]] = []
    for i, u in enumerate(closed):
        if titled and titled[-1][2] == TITLE and u[2] == PARA and closed[i - 1] is titled[-1]:
            titled[-1][1:] = [u[1], PARA]
        else:
            titled.append(u)
    out: list[list[int]] = []
    pending: int | None = None
    for u in titled:
        if u[2] == OPEN:
            pending = u[0] if pending is None else pending
            continue
        if pending is not None:
            u[0], pending = pending, None
        out.append(u)
    if pending is not None:
        if out:
            out[-1][1] = titled[-1][1]
        else:
            out.append([pending, titled[-1][1], PARA])
    return out


class RuleSplitter:
    """Splits free text into steps and claims with rules; needs no model and no network."""

    name = SPLITTER_NAME

    def __init__(self, run_on_weight: int = RUN_ON_WEIGHT, cue_weight: int = CUE_WEIGHT,
                 detector: NoKnowledgeDetector | None = None):
        self.run_on_weight = run_on_weight
        self.cue_weight = cue_weight
        self.detector = detector or NoKnowledgeDetector()

    def step_spans(self, text: str, regions: Regions | None = None) -> list[tuple[int, int]]:
        """The [start, end) spans of the steps of text."""
        return self._layout(text, regions or Regions(text), {})

    def _layout(self, text: str, regions: Regions, known_units: dict) -> list[tuple[int, int]]:
        """Step spans; known_units receives the sentence units of paragraph steps (saves recomputing them)."""
        units: list[list[int]] = []
        for s, e, kind in _blocks(text, regions):
            if kind == PARA:
                spans = unit_spans(text, s, e, regions)
                if self._weight(text, spans) > self.run_on_weight:
                    # each sentence its own step, but never one that shows nothing (a stray control character
                    # after the last sentence became a step of its own; alone it splits into no step at all)
                    spans = [(a, b) for a, b in spans if has_visible_content(text[a:b])]
                    units.extend([a, b, PARA] for a, b in spans)
                    known_units.update(((a, b), [(a, b)]) for a, b in spans)
                    continue
                known_units[(s, e)] = spans
            units.append([s, e, kind])
        return [(s, e) for s, e, _ in _attach(units)]

    def _weight(self, text: str, spans: list[tuple[int, int]]) -> int:
        """How strongly a paragraph's sentence units look like separate steps."""
        weight = 1
        for a, _ in spans[1:]:
            if _STEP_CUE.match(text, a):
                weight += 1 + self.cue_weight
            elif not _WEAK_START.match(text, a):
                weight += 1
        return weight

    def split(self, text: str, question: str = "") -> SplitResult:
        regions = Regions(text)
        known_units: dict = {}
        spans = self._layout(text, regions, known_units)
        return SplitResult(text, self.steps(text, spans, question, regions, known_units), self.name)

    def split_steps(self, steps: Sequence[str], question: str = "") -> SplitResult:
        text = "\n".join(steps)
        spans: list[tuple[int, int]] = []
        offset = 0
        for raw in steps:
            spans.append(_trim(text, offset, offset + len(raw)))
            offset += len(raw) + 1
        return SplitResult(text, self.steps(text, spans, question, Regions(text)), self.name)

    def steps(self, text: str, spans: Sequence[tuple[int, int]], question: str = "",
              regions: Regions | None = None, known_units: dict | None = None) -> tuple[Step, ...]:
        """Steps over the given spans, with claims and NO_KNOWLEDGE labels."""
        regions = regions or Regions(text)
        known_units = known_units or {}
        judge = self.detector.for_question(question)
        out = []
        for index, (start, end) in enumerate(spans):
            units = known_units.get((start, end)) or unit_spans(text, start, end, regions)
            claims = tuple(Claim(text[s:e], s, e, judge(_without_emphasis(text[s:e])), subject)
                           for s, e, subject in claim_spans(text, units, regions))
            out.append(Step(index, text[start:end], start, end, claims, all(c.no_knowledge for c in claims)))
        return tuple(out)


def _without_emphasis(claim: str) -> str:
    """The claim as the NO_KNOWLEDGE rules read it: "**Answer:** B" is "Answer: B"."""
    return _EMPHASIS.sub("", claim) if "**" in claim or "__" in claim else claim
