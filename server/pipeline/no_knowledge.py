"""NO_KNOWLEDGE detection: claims that state no domain fact (definition and rules in docs/splitting.md).

A claim is NO_KNOWLEDGE when all it does is restate the question, plan, talk
about the reasoning itself, do arithmetic on the problem's own quantities, or
state the conclusion. Everything else counts as knowledge and is judged: a
doubtful claim is judged rather than hidden, because hiding knowledge inflates KI.
"""

from __future__ import annotations

import functools
import re
from typing import Callable

from .claims import finite_verb

_I = re.IGNORECASE
# Discourse openers and interjections carry nothing; what follows them decides.
# "No" is an interjection only before punctuation ("No, that is wrong."): "No antibiotics are needed" keeps its
# negation. An opener word inside a compound ("First-line", "Well-controlled") is not an opener.
_OPENER = re.compile(
    r"^(?:(?:(?:okay|ok|alright|all right|right|hmm+|um+|uh+|wait|well|yes|yeah|so|now|then|next|first|firstly|"
    r"second|secondly|third|finally|lastly|also|thus|therefore|hence|again|actually|oh|ah|great|good|"
    r"in (?:summary|conclusion|short)|overall|to summari[sz]e|to conclude|that said)\b(?!-\w)|no\b(?=\s*[,.:;!?])"
    # a label line's label ("Given: a 58-year-old man …", "Facts:\nMetformin is …"): what follows is read alone
    r"|(?:facts?|key facts?|known|data|notes?|findings|information|background|summary|recap)(?=\s*:)"
    # a hedge: what follows is read as said ("I think pioglitazone is contraindicated in heart failure." states it;
    # "I think we need the area first." stays planning)
    r"|i (?:think|believe|guess|suppose)\b(?!\s*(?:so|not)\b)(?:\s+that\b(?!'))?"
    r"|i(?: am|'m) (?:fairly |quite |pretty )?(?:sure|confident)\b(?:\s+that\b(?!'))?)"
    r"[\s,.:;!?-]*)+", _I)
# A number about the case ("So she has 12 apples left.", "$45", "n-1"), not a digit inside a name ("SGLT2", "COX-2",
# "B12", "IL-6": letters before it, or two letters and a hyphen)
_CASE_NUMBER = re.compile(r"(?<![A-Za-z])(?<![A-Za-z]{2}-)\d")
_CONCLUSION_START = re.compile(r"^(?:so|thus|therefore|hence|in (?:summary|conclusion)|overall|that means)\b", _I)
_ANSWER = re.compile(
    r"\b(?:the|my|our) (?:final |correct |best |right )?(?:answer|option|choice)\b|^final answer\b|^answer\s*[:：]"
    r"|\\boxed|^(?:the )?answer is\b|^\(?[A-E]\)?[.:]?$|\bthe (?:most )?likely (?:diagnosis|cause|answer)\b"
    # "is likely" names the case's answer ("This is most likely croup."); "is likely to <verb>" states a tendency
    # ("Hyperkalemia is likely to cause arrhythmias."), judged like any claim
    r"|\bis (?:most )?likely\b(?! to\b)", _I)
_QUESTION_END = re.compile(r"\?[\s\"'”’)\]*_]*$")
_META = re.compile(r"^(?:that|this|it) (?:is|was|explains|fits|works|matches)\b((?:\W+\w+){0,4})\W*$", _I)
# What a short "That/this/it is …" remark may say and stay talk about the work ("This is incorrect.", "That matches the
# given equation.", "It is the same as before."); any other word makes it a statement about the subject ("It is a
# cholinesterase inhibitor.", "This is best treated with propranolol."), judged like any claim.
META_WORDS = frozenset(
    "contradiction contradictory consistent inconsistent solution solutions answer answers same before given equation "
    "equations expression result results already achieved indeed complex simple simpler done possible impossible "
    "valid invalid needed required expected satisfied true false yet exactly what want wanted asked problem "
    "statement condition conditions less more larger greater lower higher smaller bigger too low high large small "
    "much even still enough sufficient insufficient integer number numbers quadrant sequence term first second "
    "third fourth fifth sixth seventh last crucial important key observation calculation task written original "
    "divisible oldest newest range within allowed combination another trivially always necessarily counted twice "
    "initially approximately equal mechanism".split())
_PLANNING = re.compile(
    r"^(?:(?:recall|consider|remember|review|examine|identify|compare|evaluate|analy[sz]e|think about|look at|"
    r"focus on|start with|begin with|compute|calculate|determine|find|check|note) (?:the|each|all|what|which|how|"
    r"whether|if|our|its|their|this|these)\b|let'?s|let us|let me|let (?:[\w']+\W+){1,8}?(?:be|denote|represent)\b"
    r"|i (?:need|want|have|will|am going)|i'll|we (?:need|want|have|must|should|will|can|are going)|we'll"
    r"|to (?:find|solve|answer|determine|compute|calculate|figure|work|get|check|see)"
    r"|(?:the )?(?:question|problem|task) (?:asks|is asking|is about|wants|says|gives|tells|is which|is what|is how)"
    r"|(?:we|i) (?:are|am) (?:asked|given|told|looking)|i'm (?:asked|given|told|looking)"
    r"|looking at (?:the|each) (?:options?|choices?)|(?:i'll|let me|we'll) (?:go|look|work) through"
    r"|consider(?:ing)? each|i (?:think|believe|am (?:fairly |quite |pretty )?(?:sure|confident))"
    r"|that (?:fits|makes sense|explains|is consistent|matches|works)|(?:that|this) (?:is|seems) (?:correct|right))",
    _I)
# Planning that still carries a statement: "recall that warfarin is ...", "we use the formula: A = ...".
_ASSERTS = re.compile(r"\b(?:that|since|because|as) \w+(?:\W+\w+){0,6}?\W+(?:is|are|was|were|has|have|can|"
                      r"causes?|inhibits?|blocks?)\b|\b(?:formula|theorem|rule|law|identity)\b|:\s*\S", _I)
_RECALL = re.compile(r"(?:recall|remember|review)\b(?!-)(?!\s+(?:that|how|why|when|if|whether)\b)", _I)
_RESTATE = re.compile(
    r"^(?:the patient|this patient|the child|the woman|the man|the boy|the girl|the student|our patient"
    r"|(?:we|you) (?:have|know|are told|are given)|given (?:that|are|is)|given\s*:|here,? we have"
    r"|(?:he|she|they) (?:has|have|is|are|had|was|were|presents?|takes?|buys?|earns?|reads?|walks?|saves?|sells?)\b)",
    _I)
# A negation the question does not have: "Insulin is not a sulfonylurea" asked about "Which drug is a sulfonylurea?
# A. Insulin ..." uses only the question's words but says what the question does not (it is not a restatement).
_NEGATION = re.compile(r"\b(?:not|no|never|cannot|neither|nor)\b|n't\b", _I)
NEGATED = "~not"  # in question_words when the question holds a negation (never a word: words are letters or digits)
_GENERIC_SUBJECT = re.compile(r"^(?:an? |any |every |all |most )[a-z]", _I)
_COPULA = re.compile(r"\s(?:is|are|was|were)\s", _I)
# A worked computation: an operator or equals sign between numbers, or a percentage.
_WORKED = re.compile(r"\d\)?\s*(?:[=+×÷*/^-]|\\times|\\div|\\cdot)\s*\(?-?[$€£]?\d|=\s*-?[$€£]?\d"
                     r"|\d\s*(?:%|percent)")
# A range or a name written with hyphens between numbers and followed by a unit or a word: "3.5-5.0 mEq/L",
# "a 30-60-90 triangle", "37-38 °C". Not a subtraction ("19-7x", "(52-5)!" and "20-5 = 15" still are).
_RANGE = re.compile(r"(?<![\w.^_{}\\-])\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)+(?=\s+[A-Za-zµμ]|\s*[%°])")
# A formula over a general variable: "(n - 2) × 180", "n(n + 1)/2" (not an assignment such as "n = 8").
_GENERAL_VARIABLE = re.compile(r"\b[nk]\s*[-+]\s*\d|\b[nk]\s*\(|\(\s*[nk]\b(?!\s*=)")
_SYMBOLIC = re.compile(r"\b[a-zπ]\s*\^|\bπ\s*[a-z]\b|\b[a-z]\s*[×*·/]\s*[a-z]\b|\b[a-z]\([a-z]\)")
_KNOWLEDGE_PHRASE = re.compile(
    r"\b(?:associated with|caused by|due to|leads? to|results? (?:in|from)|points? to|consistent with|typical of|"
    r"(?:drug|treatment|agent|test|study|antibiotic|procedure|imaging|management) of choice|concerning for|"
    r"treatment of|most (?:common|frequent)|side effects?|risk of|in general|for (?:any|all)|exactly when|"
    r"if and only if|by definition|equals? the|is the (?:sum|product|ratio|number|square|cube|power|quotient))\b", _I)
_MATH_NOISE = re.compile(r"\\[A-Za-z]+|[\d.,]+|[=+\-*/×÷^()<>≤≥≈%$\\{}\[\]|!:;'\"`°]")
_WORD = re.compile(r"[a-zπ][a-z'-]*|\d+")
# Runs of two or more letters outside a-z: words of another script (a lone θ or Δ is a variable, an é or ü part of
# a Latin word).
_OTHER_SCRIPT = re.compile(r"[^\W\d_a-zA-Z]{2,}")

# Words without which the answer pattern, the knowledge phrases or a formula cannot match (cheap pre-checks).
_ANSWER_HINTS = frozenset("answer option choice boxed likely".split())
_PHRASE_HINTS = frozenset(
    "associated caused due lead leads result results point points consistent typical treatment most side risk "
    "drug agent test study antibiotic procedure imaging management concerning "
    "general any all exactly if definition equal equals sum product ratio number square cube power quotient".split())
_LETTER_VARIABLES = frozenset("bcdefghjklmnopqrstuvwxyzπ")  # single letters that are not words
# Single words that mark general knowledge rather than talk about this problem.
KNOWLEDGE_WORDS = frozenset(
    "formula theorem law rule lemma identity definition defined principle property always never usually typically "
    "generally commonly classic classical characteristic hallmark pathognomonic cause causes caused because "
    "mechanism responsible inhibit inhibits inhibitor blocks block antagonist antagonists agonist agonists "
    "stimulate stimulates secrete secretes secreted produce produces metabolized metabolised excreted cleared "
    "indicate indicates suggests suggest first-line contraindicated complication complications "
    # a finding read as what it points to ("…, suggesting esophageal perforation"): knowledge, even about the case
    "suggesting suggestive indicating indicative".split()
)
# Words of talk about the reasoning itself; a claim made of these (and stopwords) states nothing ("Hmm, I'm not
# sure about that.", "Moving on to the next option."). A number or any other word makes it a candidate claim.
REASONING_WORDS = frozenset(
    "hmm hmmm okay ok alright wait well yes yeah oh ah um uh so now then next first again also actually anyway "
    "alternatively maybe perhaps probably really quite pretty just still right wrong correct incorrect true false "
    "sure unsure certain confident interesting tricky careful confusing confused mistake mistakes error oops "
    "i'm i've i'd i'll let's that's it's what's there's let think thinking thought recall remember reconsider "
    "reconsidering rethink consider considering check checking double-check double-checking verify verifying "
    "look looking see seems seem seemed go going move moving back made make making work working figure "
    "option options choice choices question questions step steps part point approach idea thing things something "
    "anything everything case recap summarize summarise summary together putting put put's bit moment mind "
    "fine good great hard easy clear obvious doesn't don't didn't isn't aren't wasn't can't won't".split()
)
_MATH_MARKS = frozenset("=<>+*/^\\$")  # an equation is not talk ("We see that: f(-x) = -f(x)")
CASE_WORDS = frozenset("answer option choice diagnosis this these it we he she his her they that here there x y n"
                       .split())
VERB_WORDS = frozenset("is are was were be been has have had can could may might must should will would does do did"
                       .split())
STOPWORDS = frozenset(
    "a an the and or but if then than so of to in on at by for with from into onto over under about as is are was "
    "were be been being am do does did has have had having it its this that these those there here he she they "
    "them his her their we us our you your i me my not no yes can could may might must shall should will would "
    "which who whom whose what when where why how all any each some such very also just only more most other "
    "both either neither one two three same own out up down off again further once plus".split()
)
# Words that appear in worked arithmetic without adding any fact.
ARITHMETIC_WORDS = frozenset(
    "total sum left gives give get gets got makes make equals equal times plus minus divided multiplied "
    "subtract subtracting add adding multiply multiplying divide dividing result results remaining number "
    "numbers value values find found answer each per altogether together after before now first next then "
    "therefore thus hence so compute computing calculate calculating check correct yes cost costs spend spends "
    "spent pays paid earn earns earned needs need needed has have had buy buys bought sells sold amount "
    "which yields means substituting substitute plugging simplifying simplify solving solve us "
    "both sides side factor factors squared square root sqrt approximately about roughly half halves twice "
    "double doubled triple tripled quarter quarters average difference "
    # units of time and the calendar: a computation's scaffolding ("5 classes a day, Monday to Friday")
    "second seconds minute minutes hour hours day days daily week weeks weekly weekday weekdays weekend "
    "weekends month months monthly year years yearly annual annually monday tuesday wednesday thursday "
    "friday saturday sunday".split()
)


def _stem(word: str) -> str:
    return word[:5] if word[0].isalpha() else word


def _meta(text: str) -> bool:
    """A short remark about the work: "That is correct.", "This fits.", "It matches the given equation."."""
    m = _META.match(text)
    if m is not None and any(c.isdigit() or c in _MATH_MARKS for c in m.group(1)):
        return True  # about this problem's numbers: "This is still less than 17", "It is given as \\( 143^\\circ \\)."
    return m is not None and all(w in STOPWORDS or w in REASONING_WORDS or w in CASE_WORDS or w in META_WORDS
                                 for word in _WORD.findall(m.group(1).lower()) for w in word.split("-"))


def _content(words: list[str]) -> list[str]:
    return [_stem(w) for w in words if w not in STOPWORDS and (len(w) > 2 or w.isdigit())]


def _verbless(words: list[str]) -> bool:
    return not any(w in VERB_WORDS or (len(w) > 4 and w.endswith(("es", "ed")) and not w.endswith("ss"))
                   or (len(w) > 3 and w[-1] == "s" and w[-2] not in "siu") for w in words)


def _arithmetic(text: str, words: list[str], question_words: frozenset[str]) -> bool:
    """Worked arithmetic on the problem's quantities: numbers and operators, few words beyond the question's."""
    if not _WORKED.search(_RANGE.sub("range", text) if "-" in text else text) or (
            ("n" in words or "k" in words) and _GENERAL_VARIABLE.search(text)):
        return False
    words = [w for w in _WORD.findall(_MATH_NOISE.sub(" ", text).lower()) if w not in STOPWORDS and len(w) > 1]
    return sum(1 for w in words if w not in ARITHMETIC_WORDS and _stem(w) not in question_words
               and not (w.endswith("s") and _stem(w[:-1]) in question_words)) <= 2  # "rewards" for "reward"


def _subject_from_question(text: str, question_words: frozenset[str]) -> bool:
    """'the main route is renal excretion': the thing named before 'is' comes from the question."""
    m = _COPULA.search(text)
    if not m or not question_words:
        return False
    words = _content(_WORD.findall(text[:m.start()].lower()))
    return bool(words) and all(w in question_words for w in words)


class NoKnowledgeDetector:
    """Labels claims NO_KNOWLEDGE by written rules.

    restate_coverage: share of a claim's content words found in the question at
    or above which the claim is a restatement of the question.
    """

    def __init__(self, restate_coverage: float = 0.75):
        self.restate_coverage = restate_coverage

    def for_question(self, question: str = "") -> Callable[[str], bool]:
        """A labeller for the claims of one chain (the question's words are prepared once)."""
        return functools.partial(self.is_no_knowledge, question_words=question_words(question))

    def is_no_knowledge(self, claim: str, question_words: frozenset[str] = frozenset()) -> bool:
        rest = _OPENER.sub("", claim.strip()).strip()
        words = _WORD.findall(rest.lower())
        foreign = sum(len(run) for run in _OTHER_SCRIPT.findall(rest))
        if foreign and foreign > sum(len(w) for w in words if not w.isdigit()):
            # Mostly another script ("阿司匹林抑制环氧合酶。", Cyrillic, Greek): these English rules cannot read it,
            # so it is judged, not silently dropped (every step of a chain in Chinese was NO_KNOWLEDGE: nothing was
            # judged, and knowledge_index_paper came out 1.0 as if every step were right).
            return False
        if not words:
            return True  # only interjections, markup or punctuation
        if _QUESTION_END.search(rest):
            return True  # a question asserts nothing: "Question: Which drug is first-line?", "Could it be croup?"
        if (not _ANSWER_HINTS.isdisjoint(words) or len(words) < 3) and _ANSWER.search(rest) or _meta(rest):
            return True
        if all(w in REASONING_WORDS or w in STOPWORDS or w in CASE_WORDS or len(w) == 1 and w.isalpha()
               for w in words) and not any(c in _MATH_MARKS for c in rest):
            return True  # only talk about the reasoning: "Wait, I made a mistake.", "Hmm, interesting.", "To recap:"
        knowledge = not KNOWLEDGE_WORDS.isdisjoint(words) or (
            not _PHRASE_HINTS.isdisjoint(words) and bool(_KNOWLEDGE_PHRASE.search(rest)))
        if _CONCLUSION_START.match(claim.lstrip()) and not knowledge and (
                not CASE_WORDS.isdisjoint(words) or "=" in rest or _CASE_NUMBER.search(rest)
                or _subject_from_question(rest, question_words) and not _new_negation(rest, question_words)
                or (_verbless(words) and len(_content(words)) <= 3)):  # "So insulin.": the conclusion, named
            return True
        if _PLANNING.match(rest) and not _ASSERTS.search(rest):
            return True
        if _RECALL.match(rest) and len(words) <= 5 and not any(finite_verb(w) for w in words[1:]):
            return True  # "First, recall heparin.": a topic named, nothing said about it
        if knowledge or _GENERIC_SUBJECT.match(rest):
            return False
        if any(c.isdigit() for c in rest) and _arithmetic(rest, words, question_words):
            return True
        if not _LETTER_VARIABLES.isdisjoint(words) and _SYMBOLIC.search(rest):
            return False  # a formula in variables ("π r^2 h") states a general rule
        content = _content(words)
        if not content:
            return True
        if _new_negation(rest, question_words) and CASE_WORDS.isdisjoint(words):
            return False  # ("This is not in simplest form" talks about the work: the rules below decide)
        covered = sum(1 for w in content if w in question_words) / len(content)
        if _RESTATE.match(rest) or _verbless(words):
            return covered >= self.restate_coverage / 2  # a restating opener or a verbless list of findings
        return covered >= self.restate_coverage


# An answer option written into the question: "A. Muscle biopsy", "(B) Electromyography", "C) ...", "D: ...".
_OPTION_MARK = re.compile(r"(?:^|(?<=\s))(?:\(([A-J])\)|([A-J])[.):])(?=\s)", re.MULTILINE)


# (possessive: overlapping whitespace quantifiers backtracked over each other, cubic in a run of spaces)
_OPTIONS_LABEL = re.compile(r"(?:answer\s++)?(?:choices|options)[^\S\n]*+:?[^\S\n]*+\n?[^\S\n]*+\Z", _I)
_OPTION_SENTENCE = re.compile(r"\b(?:is|are|was|were|must|can|cannot|will|would|has|have|had)\b", _I)
MAX_OPTION_CHARS = 300
# Where the last option of a list ends: its line's end, or a sentence ending after it ("C. glipizide. Which …").
_LAST_OPTION_END = re.compile(r"\n|[.?!](?=\s+[A-Z(])|[.?!]?\s*\Z")


def strip_inline_options(question: str) -> str:
    """The question without the option lists written into it (MedQA's text, "Answer Choices: (A) … (B) …", an
    "Options:" block), in one pass over the question.

    A ScoreChain's separate `choices` are not read by the restatement rule (measured: they would hide 142 of 7,803
    MedBullets/MedQA claims, nearly all the facts that decide the answer, "The most accurate diagnostic test for
    polymyositis is muscle biopsy." with "Muscle biopsy" an option); options written inline must not hide them
    either. A list is marks lettered A, B, C… in order, either each starting a line (two or more) or within one
    line (three or more), so "vitamin A. B. cereus …" stays question text; a mark of another letter inside an
    option ("D. E. coli culture", "A. H. pylori") is option text. The list ends with its last option's line or
    sentence (a stem after it is kept), and it is left out only when every option names something
    (_named_options). An "Options:" or "Answer Choices:" label before it goes with it."""
    line_marks: list[tuple[int, int, str]] = []
    inline: list[tuple[int, int, str]] = []
    runs: list[list[tuple[int, int, str]]] = []
    previous = 0
    for m in _OPTION_MARK.finditer(question):
        mark = (m.start(), m.end(), m.group(1) or m.group(2))
        if question.find("\n", previous, m.start()) >= 0 or m.start() == 0:  # (a new line since the last mark)
            _close_run(inline, runs, least=3)
        if m.start() == 0 or question[m.start() - 1] == "\n":
            _extend_run(line_marks, mark, runs, least=2)
        _extend_run(inline, mark, runs, least=3)
        previous = m.end()
    _close_run(line_marks, runs, least=2)
    _close_run(inline, runs, least=3)
    kept, cursor = [], 0
    for run in sorted(runs):
        if run[0][0] < cursor:
            continue  # (inside a list already left out)
        texts = [question[a[1]:b[0]] for a, b in zip(run, run[1:])]
        # (looked for within MAX_OPTION_CHARS: searched to the end of the question for every run, it was quadratic;
        # an end found only at that window's edge is no end: the "option" runs on, it is prose)
        window = min(len(question), run[-1][1] + MAX_OPTION_CHARS)
        last = _LAST_OPTION_END.search(question, run[-1][1], window)
        if last is None or last.end() == window < len(question):
            continue
        texts.append(question[run[-1][1]:last.start()])
        if not _named_options(texts):
            continue
        kept.append(_OPTIONS_LABEL.sub("", question[cursor:run[0][0]]))
        cursor = last.start() if last.group() == "\n" else last.end()  # (the line break stays)
    if not kept:
        return question
    kept.append(question[cursor:])
    return "".join(kept)


def _extend_run(run: list, mark: tuple[int, int, str], runs: list, least: int) -> None:
    """Adds a mark to the run being read when it has the next letter, starts a run at an "A" when the run holds
    only its "A" (or none), and otherwise reads the mark as option text ("E." of "E. coli")."""
    if run and mark[2] == chr(ord(run[-1][2]) + 1):
        run.append(mark)
    elif mark[2] == "A" and len(run) <= 1:
        run[:] = [mark]
    elif mark[2] == "A":
        _close_run(run, runs, least)
        run[:] = [mark]


def _close_run(run: list, runs: list, least: int) -> None:
    if len(run) >= least:
        runs.append(list(run))
    run.clear()


def _named_options(texts: list[str]) -> bool:
    """Whether every option names something ("Muscle biopsy", "Vitamin B6 supplementation", "Tell the
    attending"): no sentence ("(A) The truck is the third-newest.": restating it is talk about the case), no number
    or formula ("(B) 15", "$14.45001$": arithmetic on them is the problem's own)."""
    texts = [t.strip() for t in texts]
    return all(t and sum(c.isalpha() for c in t) > sum(c.isdigit() for c in t)
               and not any(m in t for m in ("$", "\\(", "\\[")) and not t.endswith((".", "?"))
               and not _OPTION_SENTENCE.search(t) for t in texts)


@functools.lru_cache(maxsize=256)
def question_words(question: str) -> frozenset[str]:
    """The stemmed content words of a question (an option list written into it left out: strip_inline_options),
    and NEGATED when it holds a negation."""
    question = strip_inline_options(question)
    words = _content(_WORD.findall(question.lower()))
    return frozenset(words + [NEGATED] if _NEGATION.search(question) else words)


def _new_negation(text: str, question_words: frozenset[str]) -> bool:
    """Whether text negates something while the question negates nothing."""
    return bool(question_words) and NEGATED not in question_words and _NEGATION.search(text) is not None


_DEFAULT = NoKnowledgeDetector()


def is_no_knowledge(claim: str, question: str = "") -> bool:
    """True when the claim states no domain fact (restating, planning, meta talk, arithmetic, conclusion)."""
    return _DEFAULT.is_no_knowledge(claim, question_words(question))
