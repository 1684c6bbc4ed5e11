"""Atomic claims inside a step: sentence units without markup, coordinated statements split where safe.

A claim is always a span of the chain text (never rewritten), so its offsets
point at exactly what the auditor reads.
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

# An upper-case letter before a lower-case word is a genus, not a label: "E. coli is ...", "C. difficile ...".
_LEAD = re.compile(
    r"(?:</?think>|#{1,6}(?=\s)|[-*+•](?=\s)|\(?\d{1,3}[.)](?=\s)"
    r"|\(?(?:(?-i:[a-z])|i{2,3}|iv|vi{1,3}|ix|xi{1,3})[.)](?=\s)|\(?(?-i:[A-Z]\.(?=\s++(?![a-z]))|[A-Z]\)(?=\s))"
    r"|\*\*|__|[>|](?=\s)"
    r"|(?:step|part|case)\s*\d{1,3}\s*[:.)\-–]|\s)+",
    re.IGNORECASE,
)
_HEADING_LINE = re.compile(r"[^\S\n]*(?:#{1,6}[ \t\xa0][^\n]*|\*\*[^*\n]+\*\*[ \t]*:?|__[^_\n]+__[ \t]*:?)[ \t]*")
_ALNUM = re.compile(r"\w")
# An equation number or item label standing alone ("(2)" after "x^2 + y^2 = 1600 ...", "\((i)\)"): it states nothing.
_BARE_LABEL = re.compile(r"(?:\\\()?\((?:\d{1,3}|[A-Za-z]|i{2,3}|iv|vi{0,3}|ix|xi{0,3})\)(?:\\\))?[.:]?")
# The line under a Markdown table's header row: "|---|:---:|".
_TABLE_RULE = re.compile(r"[ \t\r]*\n[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|")
_BOLD_WORDS = re.compile(r"\S+\s+\S+\s+\S")  # at least three words


def bold_sentence(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a bold line that is a sentence, not a title: "**Insulin is the first-line
    treatment of DKA.**" states a fact (three words or more ending in "." or "!"); "**Final Answer**" does not."""
    while start < end and text[start] in " \t":
        start += 1
    while end > start and text[end - 1] in " \t":
        end -= 1
    marker = text[start:start + 2]
    if end - start < 6 or marker not in ("**", "__") or text[end - 2:end] != marker:
        return False
    inner_end = end - 2
    while inner_end > start + 2 and text[inner_end - 1].isspace():
        inner_end -= 1
    return text[inner_end - 1] in ".!" and _BOLD_WORDS.search(text, start + 2, inner_end) is not None
# Whitespace runs are matched from their first character, possessively: linear on long runs of spaces.
_CONJ = re.compile(r"(?:(?P<comma>,)|(?<!\s))\s++(?P<word>and|but|whereas|while)\s+|(?P<semi>;)\s+"
                   r"|,\s++(?P<so>so|yet)\s+")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")

AUXILIARIES = frozenset(
    "is are was were be been has have had can cannot could may might must shall should will would does do did "
    "isn't aren't wasn't weren't hasn't haven't doesn't don't didn't can't won't shouldn't".split()
)
# Third-person verbs common in medical and math reasoning (a small closed list keeps the split safe).
VERBS = frozenset(
    "acts activates affects appears becomes binds blocks carries causes clears contains converts crosses "
    "decreases depends destroys drains enhances enters equals excretes forms gives happens has impairs implies "
    "improves includes increases indicates induces infects inhibits innervates involves kills lacks leads "
    "lies lowers makes means mediates metabolizes needs occurs prevents produces promotes protects raises "
    "reduces regulates releases remains requires results reverses secretes shows spreads stimulates suggests "
    "supplies suppresses takes targets transmits travels treats triggers uses works worsens yields".split()
)
_ADVERBS = frozenset("also often usually mainly mostly primarily typically then not only still rarely commonly "
                     "generally frequently directly thus therefore".split())
_CLAUSE_HEADS = frozenset("it they this that these those he she we its their there".split())


class _Regions(Protocol):
    def inside(self, pos: int) -> bool: ...


def finite_verb(word: str) -> bool:
    """Whether word is a finite verb of the closed lists (an auxiliary or a common verb)."""
    return _finite_verb(word)


def _finite_verb(word: str) -> bool:
    w = word.lower()
    return (w in AUXILIARIES or w in VERBS or w + "s" in VERBS or w + "es" in VERBS
            or (len(w) > 5 and w.endswith(("izes", "ises", "ifies"))))


def _starts_predicate(words: list[str]) -> bool:
    """Whether words begin a verb phrase ("is renally cleared", "also lowers ..."); not a noun that looks like a
    verb ("lack of flatus", "use of steroids")."""
    for i, w in enumerate(words[:3]):
        if _finite_verb(w):
            return w.lower() in AUXILIARIES or i + 1 >= len(words) or words[i + 1].lower() != "of"
        if w.lower() not in _ADVERBS:
            return False
    return False


_LAST_WORD = re.compile(r"([A-Za-z]+)[^A-Za-z]*\Z")


def _paired_adjective(text: str, left_end: int, right_words: list[str]) -> bool:
    """"upper and lower extremities", "thicker and lower volume feeds": 'lower' pairs with the adjective before the
    conjunction, it is not the verb of a new predicate."""
    if right_words[0].lower() != "lower":
        return False
    m = _LAST_WORD.search(text, max(0, left_end - 40), left_end)
    return m is not None and m.group(1).lower().endswith("er")


def _starts_clause(words: list[str]) -> bool:
    """Whether words begin a clause with its own subject ("insulin raises uptake"); `words` end at the first comma,
    semicolon or colon, and a verb after a relative pronoun is the relative clause's ("CSF studies that are ..."):
    the last item of a list ("…, and pharyngeal erythema, and is treated …") is no clause."""
    if len(words) < 2 or _finite_verb(words[0]):
        return False
    if words[0].lower() in _CLAUSE_HEADS:
        return _finite_verb(words[1]) or (len(words) > 2 and _finite_verb(words[2]))
    for w in words[1:4]:
        if w.lower() in _RELATIVE_PRONOUNS:
            return False
        if _finite_verb(w):
            return True
    return False


_RELATIVE_PRONOUNS = frozenset("that which who".split())
# The right side up to its first comma, semicolon or colon, past a connective adverb ("; however, it would …")
_CLAUSE_PART = re.compile(r"(?:\s*(?:however|therefore|thus|hence|moreover|furthermore|instead|otherwise|"
                          r"consequently|in addition|in contrast|in fact|for example|for instance)\s*,)?[^,;:]{0,80}",
                          re.IGNORECASE)
_COPULAS = frozenset("is are was were".split())
COPULA_RELATIVE_WORDS = 6  # "is a gram-positive anaerobic rod that": the relative pronoun's distance from the copula
# Words that open a subordinate or relative clause: a verb phrase after one belongs to that clause.
# (Not "as" or "when": "appear as solid masses", "a normal finding when they are small and are seen on most ECGs"
# continue their sentence's subject more often than not.)
_SUBORDINATORS = frozenset("which who whom whose that because since".split())
_NO_SUBJECT_TAIL = frozenset("that which who whom whose where when if because since although".split())
_RELATIVE = frozenset("that which who".split())
_LABEL = re.compile(r":\s+|\n")
# A clause opened by a subordinator or a preposition has no plain subject before its first verb.
_NOT_A_SUBJECT_START = frozenset(
    "although though because since if when while as after before unless whereas until once given despite "
    "on in at for with during by from to of into under over within without between among about".split())


def clause_subject(text: str, start: int, end: int) -> str:
    """The words of a clause before its first finite verb ("Metformin" of "Metformin inhibits ..."), or ""
    when there is none usable (the clause starts with its verb, or its subject is long or unfinished)."""
    previous = ""
    for m in _WORD.finditer(text, start, end):
        word = m.group()
        if _finite_verb(word) and previous.lower() not in _RELATIVE:  # "Drugs that inhibit X raise ...": skip
            # after a label or heading ("Answer A: Hyperkalemia", "Summary:\nFractures"), the subject follows it
            head = _LABEL.split(text[start:m.start()])[-1]
            cut = len(head)
            while cut and (head[cut - 1].isspace() or head[cut - 1] in ",;:"):  # linear, unlike a `[\s,;:]+$` search
                cut -= 1
            subject = head[:cut].strip()
            words = _WORD.findall(subject)
            if (not words or len(subject) > 80 or words[-1].lower() in _NO_SUBJECT_TAIL
                    or words[0].lower() in _NOT_A_SUBJECT_START):  # "Although this patient", "On May 15"
                return ""
            return subject
        previous = word
    return ""


def split_coordination(text: str, start: int, end: int, regions: _Regions) -> list[tuple[int, int, bool]]:
    """Splits "X inhibits Y and is renally cleared" into two spans; leaves "X and Y are ..." whole.

    Each span says whether it continues the first clause's verb phrase without a subject of its own."""
    if end - start < 20 or not _CONJ.search(text, start, end):
        return [(start, end, False)]
    spans: list[tuple[int, int, bool]] = []
    cursor, predicate = start, False
    left = _Left(cursor)  # what the text from cursor holds: words, a verb, open brackets (kept incrementally)
    for m in _CONJ.finditer(text, start, end):
        left.extend(text, m.start())
        if regions.inside(m.start()) or left.depth:
            continue
        right_words = _WORD.findall(text[m.end():min(end, m.end() + 80)])
        if left.words < 2 or len(right_words) < 2 or not left.verb:
            continue
        if _elliptical(text, m.end(), end):
            continue  # "..., but aspirin does not": the clause means nothing without the verb phrase before it
        clause_ok = bool(m.group("comma") or m.group("semi") or m.group("so") or m.group("word") in ("but", "whereas"))
        # (the right side must start with a word: "… than 17 and 2709 is a valid number" has a subject, a number)
        continues = (text[m.end():m.end() + 1].isalpha() and _starts_predicate(right_words)
                     and not _paired_adjective(text, m.start(), right_words))
        if continues and left.subordinate:
            # "... from myoglobin, which is released from damaged muscle and is nephrotoxic": the verb phrase
            # continues the subordinate clause, whose subject is not the sentence's: kept whole, not given the
            # sentence's subject ("The management of rhabdomyolysis is nephrotoxic")
            continue
        if not (continues or (clause_ok and _starts_clause(_WORD.findall(_CLAUSE_PART.match(text, m.end(),
                                                                                           end).group())))):
            continue
        spans.append((cursor, m.start(), predicate))
        cursor, predicate = m.end(), continues
        left = _Left(cursor)
    spans.append((cursor, end, predicate))
    return spans


_ELLIPSIS_TAIL = frozenset(("not", "too", "either", "so", "also", "n't"))
_ELLIPSIS_HEAD = frozenset(("so", "neither", "nor"))


def _elliptical(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is a clause that leaves its verb phrase out: "aspirin does", "warfarin is not",
    "ARBs don't", "so does liraglutide", "neither do ARBs" (split off, it would be judged as written)."""
    if end - start > 60:
        return False
    tokens = [t.strip(".,;:!?)\"'”’").lower() for t in text[start:end].split()]
    if not 2 <= len(tokens) <= 6:
        return False
    if tokens[0] in _ELLIPSIS_HEAD:
        return tokens[1] in AUXILIARIES
    # the clause must end with the auxiliary (a number after it is a predicate: "the new sum is 42")
    tail = tokens[-2] if tokens[-1] in _ELLIPSIS_TAIL and len(tokens) > 2 else tokens[-1]
    return tail in AUXILIARIES and not _finite_verb(tokens[0])


class _Left:
    """Words, whether one is a finite verb, and unclosed brackets of text[start:scanned], extended as the scan goes:
    a sentence of a thousand unsplittable "X is Y and" is read once, not once per conjunction (quadratic)."""

    __slots__ = ("scanned", "words", "verb", "depth", "subordinate", "copula_at")

    def __init__(self, start: int):
        self.scanned, self.words, self.verb, self.depth = start, 0, False, 0
        self.subordinate = False  # a subordinate or relative clause opened after the first verb
        self.copula_at = -1  # the word number of the first verb when it is a copula ("X is a Y that ...")

    def extend(self, text: str, to: int) -> None:
        # the scan stops only where a conjunction match starts (a comma, semicolon or space): no word is cut
        for m in _WORD.finditer(text, self.scanned, to):
            self.words += 1
            word = m.group().lower()
            if self.verb and not self.subordinate and word in _SUBORDINATORS:
                # "X is a rod that presents ... and should be treated": a relative clause on the copula's own noun
                # (within a few words) says more of the same thing, X; one further on is about another noun
                self.subordinate = not (word in _RELATIVE_PRONOUNS and self.copula_at >= 0
                                        and self.words - self.copula_at <= COPULA_RELATIVE_WORDS)
            if not self.verb and _finite_verb(word):
                self.verb = True
                self.copula_at = self.words if word in _COPULAS else -1
        for ch in text[self.scanned:to]:  # never split inside parentheses
            if ch in "([{":
                self.depth += 1
            elif ch in ")]}" and self.depth:
                self.depth -= 1
        self.scanned = to


def _strip_markup(text: str, start: int, end: int) -> tuple[int, int]:
    m = _LEAD.match(text, start, end)
    if m:
        start = m.end()
        marker = text[start - 2:start]
        if marker in ("**", "__") and text.find(marker, start, end - 2) >= 0:
            start -= 2  # "**Warfarin** blocks ...": the bold word is part of the claim
    return start, _trail_start(text, start, end)


def _trail_start(text: str, start: int, end: int) -> int:
    r"""Where the trailing whitespace, bold/underline markers and think tags of text[start:end] begin.

    Stripped from the end in linear time: a search for `(?:\*\*|__|</?think>|\s)+$` restarted at every position of a
    long run of spaces inside a claim (quadratic; seconds for a few thousand spaces, the GIL held throughout)."""
    while end > start:
        if text[end - 1].isspace():
            end -= 1
        elif end - 2 >= start and text[end - 2:end] in ("**", "__"):
            end -= 2
        elif end - 7 >= start and text[end - 7:end].lower() == "<think>":
            end -= 7
        elif end - 8 >= start and text[end - 8:end].lower() == "</think>":
            end -= 8
        else:
            break
    return end


def claim_spans(text: str, units: Sequence[tuple[int, int]], regions: _Regions) -> list[tuple[int, int, str]]:
    """Claims of a step given its sentence units: markup stripped, headings dropped, coordination split.

    Each is (start, end, subject): the subject borrowed from the clause it continues by a claim that is only a
    verb phrase ("" otherwise)."""
    out: list[tuple[int, int, str]] = []
    for s, e in units:
        if _HEADING_LINE.fullmatch(text, s, e) and not bold_sentence(text, s, e):
            continue  # a title; a bold sentence is a claim
        if text[s] == "|" and _TABLE_RULE.match(text, e):
            continue  # the header row of a table (the rule line under it has no word: it is no claim either)
        s, e = _strip_markup(text, s, e)
        if e <= s or not _ALNUM.search(text, s, e):
            continue
        clause, subject = (s, e), None  # the latest clause with its own subject; its subject once needed
        for a, b, continues in split_coordination(text, s, e, regions):
            if not continues:
                clause, subject = (a, b), None
            elif subject is None:
                subject = clause_subject(text, *clause)
            a, b = _strip_markup(text, a, b)
            if b > a and _ALNUM.search(text, a, b) and not _BARE_LABEL.fullmatch(text, a, b):
                out.append((a, b, subject if continues else ""))
    return out
