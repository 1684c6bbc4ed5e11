"""Request validation against the application limits (INVALID_ARGUMENT with field violations)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from .errors import FieldViolation, InvalidArgumentError
from .types import ChainInput, ChainRequest, InfoGainRequest, KnowledgeRequest


@dataclass(frozen=True)
class Limits:
    max_reasoning_chars: int = 100_000
    max_steps: int = 256
    max_step_chars: int = 8_000
    max_claims: int = 1_024
    max_question_chars: int = 20_000
    max_answer_chars: int = 4_000
    max_choices: int = 26
    max_choice_chars: int = 2_000
    max_context_passages: int = 64
    max_passage_chars: int = 10_000
    max_passage_meta_chars: int = 1_000
    max_top_k: int = 50
    max_window: int = 1_000
    max_id_chars: int = 256


# Text that shows nothing: str.strip() keeps these, so "\u200b" or "\x00" looked like content (a step was judged,
# InfoGain scored a target of one zero-width space). Categories: controls (Cc: NUL, tab, newline...), format
# characters (Cf: zero-width space/joiners, BOM, word joiner, soft hyphen, bidi controls, tags), separators
# (Zs/Zl/Zp) and lone surrogates (Cs); plus the default-ignorable or blank characters of other categories.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
_INVISIBLE_CHARS = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\u180b\u180c\u180d\u180f"  # Mongolian free variation selectors
    "\u2800"  # braille pattern blank
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))  # variation selectors
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))  # variation selectors supplement
)


def has_visible_content(text: str) -> bool:
    """Whether text holds at least one character that shows: "a\u200d" does, while " ", "\u200b", "\ufeff",
    "\x00" and "\u2060" alone do not. Wherever validation decides "is empty", this decides it."""
    for ch in text:
        if ch not in _INVISIBLE_CHARS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES:
            return True
    return False


def empty_description(text: str) -> str:
    """The description of a field with no visible character: plain "is empty" for empty or whitespace-only text, and
    for other invisible text what it holds (zero-width spaces, controls...), so the caller sees why."""
    if not text.strip():
        return "is empty"
    return "has no visible characters (only whitespace, control, format or zero-width characters)"


def setting(limit: str) -> str:
    """The environment variable that sets a limit ("max_steps" -> "KGV_LIMITS__MAX_STEPS"), named in every
    message about it so the caller's operator knows what to raise."""
    return f"KGV_LIMITS__{limit.upper()}"


def _over(limit: str, value: int) -> str:
    return f"the limit is {value} ({setting(limit)})"


def _too_long(field: str, value: str, limits: Limits, limit: str, out: list[FieldViolation]) -> None:
    most = getattr(limits, limit)
    if len(value) > most:
        out.append(FieldViolation(field, f"is {len(value)} characters long; {_over(limit, most)}"))


def check_chain(chain: ChainInput, limits: Limits, out: list[FieldViolation]) -> None:
    _too_long("question", chain.question, limits, "max_question_chars", out)
    if chain.question.strip() and not has_visible_content(chain.question):  # an empty question is allowed here
        out.append(FieldViolation("question", f"{empty_description(chain.question)}: send the question, or none"))
    has_text = chain.reasoning is not None and has_visible_content(chain.reasoning)
    has_steps = bool(chain.steps)
    # A blank reasoning beside steps counts as absent (as a blank answer does); one of invisible characters is sent
    # text, like any other: both were sent.
    if has_steps and chain.reasoning is not None and chain.reasoning.strip():
        out.append(FieldViolation("reasoning", "send either reasoning or steps, not both"))
        return
    if not has_text and not has_steps:
        if chain.reasoning and chain.reasoning.strip():
            out.append(FieldViolation("reasoning", f"{empty_description(chain.reasoning)}: the chain is empty"))
        else:
            out.append(FieldViolation("reasoning", "the chain is empty: send reasoning text or steps"))
        return
    if has_text:
        _too_long("reasoning", chain.reasoning, limits, "max_reasoning_chars", out)
        return
    steps = chain.steps
    if len(steps) > limits.max_steps:
        out.append(FieldViolation("steps", f"has {len(steps)} steps; {_over('max_steps', limits.max_steps)}"))
        return
    for i, step in enumerate(steps):
        if not has_visible_content(step):
            out.append(FieldViolation(f"steps[{i}]", empty_description(step)))
        _too_long(f"steps[{i}]", step, limits, "max_step_chars", out)
    total = sum(len(s) for s in steps) + max(0, len(steps) - 1)
    if total > limits.max_reasoning_chars:
        out.append(FieldViolation("steps", f"total {total} characters; "
                                           f"{_over('max_reasoning_chars', limits.max_reasoning_chars)}"))


def _passage_lengths(i: int, passage, limits: Limits, out: list[FieldViolation]) -> None:
    """Length limits of context passage i's text, id, title and source (validation and the early size check)."""
    _too_long(f"context[{i}].text", passage.text, limits, "max_passage_chars", out)
    _too_long(f"context[{i}].id", passage.id, limits, "max_id_chars", out)
    _too_long(f"context[{i}].title", passage.title, limits, "max_passage_meta_chars", out)
    _too_long(f"context[{i}].source", passage.source, limits, "max_passage_meta_chars", out)


def check_knowledge(req: KnowledgeRequest, limits: Limits, out: list[FieldViolation], options: str = "options") -> None:
    top_k = req.options.top_k
    if top_k is not None and not 1 <= top_k <= limits.max_top_k:
        out.append(FieldViolation(f"{options}.top_k", f"must be between 1 and {limits.max_top_k} "
                                                     f"(0 = default; {setting('max_top_k')})"))
    if len(req.context) > limits.max_context_passages:
        out.append(FieldViolation(
            "context", f"has {len(req.context)} passages; "
                       f"{_over('max_context_passages', limits.max_context_passages)}"))
        return
    ids = set()
    for i, passage in enumerate(req.context):
        if not has_visible_content(passage.text):
            out.append(FieldViolation(f"context[{i}].text", empty_description(passage.text)))
        _passage_lengths(i, passage, limits, out)
        if passage.id in ids:
            if passage.id == f"context:{i}":  # the default id of a passage sent without one
                out.append(FieldViolation(f"context[{i}].id", f"is empty, and its default id {passage.id!r} is "
                                                             "another passage's id: give every passage an id, or none"))
            else:
                out.append(FieldViolation(f"context[{i}].id", f"duplicate passage id {passage.id[:64]!r}"))
        ids.add(passage.id)
    if req.options.use_knowledge_base is False and not req.context:
        out.append(FieldViolation(f"{options}.use_knowledge_base", "is false but no context passages were sent"))


# The line boundaries of str.splitlines(): \n, \r, \v, \f, \x1c-\x1e, \x85, U+2028, U+2029.
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _own_label(index: int) -> re.Pattern:
    """An option's own letter label at its start: "A. ", "A) ", "A: ", "(A) " (either case), for option `index`."""
    letter = chr(ord("A") + index)
    return re.compile(rf"\s*(?:\({letter}\)|{letter}[.):])(?:\s|$)", re.IGNORECASE)


# An answer that only names a multiple-choice option: "B", "B.", "B)", "(B)", "B:" (any case).
_OPTION_LABEL = re.compile(r"\(?([A-Za-z])\)?[.):]?")


def named_option(text: str, choices: Sequence[str]) -> int | None:
    """The index of the option an answer names by its letter alone ("B", "(b)", "B."), or None: no options,
    another answer, or an answer that is itself the text of an option (options "X", "Y" and answer "X")."""
    text = text.strip()
    m = _OPTION_LABEL.fullmatch(text) if choices else None
    if m is None or any(text.casefold() == c.strip().casefold() for c in choices):
        return None
    return ord(m.group(1).upper()) - ord("A")


def option_violation(field: str, text: str, choices: Sequence[str]) -> FieldViolation | None:
    """An answer naming a letter past the last option, as a field violation."""
    index = named_option(text, choices)
    if index is None or index < len(choices):
        return None
    return FieldViolation(field, f"{text.strip()!r} names no option: {len(choices)} choices were sent "
                                 f"(A to {chr(ord('A') + len(choices) - 1)})")


def check_info_gain(req: InfoGainRequest, limits: Limits, out: list[FieldViolation], options: str = "options") -> None:
    if not req.chain.question.strip():  # (a question with only invisible characters is reported by check_chain)
        out.append(FieldViolation("question", "InfoGain needs the question: L_0 is the answer given the question "
                                              "alone"))
    _too_long("answer", req.answer, limits, "max_answer_chars", out)
    _too_long("gold_answer", req.gold_answer, limits, "max_answer_chars", out)
    # Blank answers count as absent (the target is the gold answer when it is not blank); an answer of invisible
    # characters only ("\u200b") would be scored as the target, so it is an error, not an absent answer.
    # Only the target is checked so: an answer beside a gold answer is not scored.
    target_field = "gold_answer" if req.gold_answer.strip() else "answer"
    target = getattr(req, target_field)
    invisible = bool(target.strip()) and not has_visible_content(target)
    if invisible:
        out.append(FieldViolation(target_field, f"{empty_description(target)}: send the answer's text, or leave it "
                                                "empty"))
    if not req.gold_answer.strip() and not req.answer.strip():
        out.append(FieldViolation("answer", "InfoGain needs a target: send answer or gold_answer"))
    if req.choices and not invisible and len(req.choices) <= limits.max_choices and (
            violation := option_violation(target_field, getattr(req, target_field), req.choices)) is not None:
        out.append(violation)
    if len(req.choices) > limits.max_choices:
        out.append(FieldViolation("choices", f"has {len(req.choices)} options; "
                                             f"{_over('max_choices', limits.max_choices)}"))
    choices = req.choices[: limits.max_choices]
    for i, choice in enumerate(choices):
        if not has_visible_content(choice):
            out.append(FieldViolation(f"choices[{i}]", empty_description(choice)))
        elif _LINE_BREAK.search(choice):
            # c_0 lists the options one per line ("A. text"): a line break would add lines that look like options
            out.append(FieldViolation(f"choices[{i}]", "must be one line: it holds a line break, and c_0 lists "
                                                       "one option per line"))
        _too_long(f"choices[{i}]", choice, limits, "max_choice_chars", out)
    if choices and all(_own_label(i).match(choice) for i, choice in enumerate(choices)):
        # Every option carries its own letter ("A. aspirin", "B) insulin"): c_0 would read "A. A. aspirin". One
        # option that merely starts like its label (option E "E. coli") is text and stays.
        for i, choice in enumerate(choices):
            label = _own_label(i).match(choice).group(0).strip()
            out.append(FieldViolation(f"choices[{i}]", f"starts with its label {label!r}: send the option's text "
                                                       "alone; the server adds the labels"))
    window = req.options.window
    if not 0 <= window <= limits.max_window:
        out.append(FieldViolation(f"{options}.window", f"must be between 0 (off) and {limits.max_window} "
                                                      f"({setting('max_window')})"))
    if req.options.paper and req.options.estimator == "nli":
        out.append(FieldViolation(f"{options}.mode", "paper mode needs a causal LM; the nli estimator has none"))


MAX_METRICS = 16  # entries of a request's `metrics` list (there are two metrics; repeating one changes nothing)
# Text fields of request messages -> the limit on their length (query: SearchKnowledgeBase, limited like a step).
_TEXT_LIMITS = (("question", "max_question_chars"), ("reasoning", "max_reasoning_chars"),
                ("query", "max_step_chars"))
_INFO_GAIN_TEXT_LIMITS = (("answer", "max_answer_chars"), ("gold_answer", "max_answer_chars"))


def check_sizes(message, limits: Limits, *, knowledge: bool = True, info_gain: bool = True) -> None:
    """The lengths of a request message's repeated fields (steps, context, choices, metrics) and texts, checked
    before the message is converted and validated. Both are linear in them and run on the event loop: one 16 MiB
    request of 8 million empty context passages held it (every call and health check) for half a minute and took
    2 GB, and a 15 MB reasoning of spaces took 1.5 s to find it held no visible character. Works on any object
    with those attributes (no protobuf import); fields the message lacks are skipped. Violations read as
    validation's own.

    Never stricter than validation: `knowledge` / `info_gain` false (a ScoreChain that does not ask for that
    metric, whose context passages or choices and answers are then neither converted nor validated) skips that
    part's fields."""
    out: list[FieldViolation] = []
    counted = [("steps", "steps", "max_steps")]
    counted += [("context", "passages", "max_context_passages")] if knowledge else []
    counted += [("choices", "options", "max_choices")] if info_gain else []
    for field, noun, limit in counted:
        values = getattr(message, field, None)
        most = getattr(limits, limit)
        if values is not None and len(values) > most:
            out.append(FieldViolation(field, f"has {len(values)} {noun}; {_over(limit, most)}"))
    metrics = getattr(message, "metrics", None)
    if metrics is not None and len(metrics) > MAX_METRICS:
        out.append(FieldViolation("metrics", f"has {len(metrics)} entries; at most {MAX_METRICS} (name each metric "
                                             "once)"))
    if out:  # the counts are over: the loops below would be long
        _raise(out)
    for field, limit in _TEXT_LIMITS + (_INFO_GAIN_TEXT_LIMITS if info_gain else ()):
        value = getattr(message, field, None)
        if isinstance(value, str):
            _too_long(field, value, limits, limit, out)
    for i, step in enumerate(getattr(message, "steps", ())):
        _too_long(f"steps[{i}]", step, limits, "max_step_chars", out)
    for i, choice in enumerate(getattr(message, "choices", ()) if info_gain else ()):
        _too_long(f"choices[{i}]", choice, limits, "max_choice_chars", out)
    for i, passage in enumerate(getattr(message, "context", ()) if knowledge else ()):
        _passage_lengths(i, passage, limits, out)
    _raise(out)


def _raise(out: list[FieldViolation]) -> None:
    if out:
        raise InvalidArgumentError(out)


def validate_knowledge(req: KnowledgeRequest, limits: Limits) -> None:
    out: list[FieldViolation] = []
    check_chain(req.chain, limits, out)
    check_knowledge(req, limits, out)
    _raise(out)


def validate_info_gain(req: InfoGainRequest, limits: Limits) -> None:
    out: list[FieldViolation] = []
    check_chain(req.chain, limits, out)
    check_info_gain(req, limits, out)
    _raise(out)


def validate_chain(req: ChainRequest, limits: Limits) -> None:
    out: list[FieldViolation] = []
    chain = (req.knowledge or req.info_gain).chain
    check_chain(chain, limits, out)
    if req.knowledge is not None:
        check_knowledge(req.knowledge, limits, out, "knowledge_options")
    if req.info_gain is not None:
        check_info_gain(req.info_gain, limits, out, "info_gain_options")
    if req.knowledge is not None and req.info_gain is not None:
        ki, ig = req.knowledge.options.splitter, req.info_gain.options.splitter
        if ki and ig and ki != ig:
            out.append(FieldViolation("info_gain_options.splitter",
                                      f"is {ig!r} but knowledge_options.splitter is {ki!r}: KI and InfoGain share "
                                      "one split of the chain; set one of them, or both alike"))
    _raise(out)
