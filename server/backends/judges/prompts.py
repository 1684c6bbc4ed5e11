"""The LLM judge's prompt, label verbalizers and decoding settings, hashed into its prompt version."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any, Sequence

from ...pipeline.types import Evidence, Verdict

PROMPT_NAME = "judge-nli/1"
# One capital letter per label: a single token in every tokenizer we know of, so the
# label's probability is the logprob of the first generated token.
VERBALIZERS: dict[Verdict, str] = {
    Verdict.SUPPORTED: "A",
    Verdict.CONTRADICTED: "B",
    Verdict.NOT_ENOUGH_INFO: "C",
}
LABELS: tuple[str, ...] = tuple(VERBALIZERS.values())
SEED = 0
TOP_LOGPROBS = 20  # vLLM's default --max-logprobs: the most a stock server returns
MAX_EVIDENCE_CHARS = 1_500  # per numbered item; long passages are cut, not dropped
# A passage longer than its share is shown as its sentences (packed up to the share) that hold the most of the
# claim's words, not always its opening: the fact a claim is about may come late in a long abstract.
EXCERPT = "claim-words/1"
MAX_PROMPT_EVIDENCE_CHARS = 12_000  # all items together (stays well inside an 8k-token context)

SYSTEM_PROMPT = (
    "You are a careful fact checker. You receive numbered evidence passages and one claim. "
    "Decide, using only the evidence and no outside knowledge, whether the evidence supports the claim, "
    "contradicts it, or does not settle it.\n"
    "A = the evidence supports the claim: at least one passage (or several read together) states it, "
    "including paraphrases and direct consequences.\n"
    "B = the evidence contradicts the claim: a passage states something that cannot be true at the same time "
    "as the claim (a different mechanism, number, drug, direction of effect or exclusive statement).\n"
    "C = the evidence does not settle the claim: it is about other things, too vague, or only related.\n"
    "Answer with a single letter: A, B or C."
)
USER_TEMPLATE = "Evidence:\n{evidence}\n\nClaim: {claim}\n\nAnswer (A, B or C):"


_WORD = re.compile(r"\w{3,}")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _excerpt(text: str, claim: str, limit: int) -> str:
    """text within limit characters: whole, or the run of its sentences sharing the most words with the claim
    (the earliest such run on a tie), marked with "…" where it was cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    if limit < 40:
        return _clip(text, limit)
    from kb.chunking import chunk_spans

    words = set(_WORD.findall(claim.lower()))
    best, best_score = None, -1
    for start, end in chunk_spans(text, limit - 2):  # room for the two marks
        score = len(words.intersection(_WORD.findall(text[start:end].lower())))
        if score > best_score:
            best, best_score = (start, end), score
    start, end = best
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


MIN_EXCERPT_CHARS = 40  # an item that would get less room than this (and is longer) is left out
EVIDENCE_BUDGET = "whole-lines/1"  # the budget counts every character of every line: number, title, text, newline


def format_evidence(evidence: Sequence[Evidence], claim: str = "") -> str:
    """Evidence as a numbered list, best first, within the prompt's character budget (titles, numbers and line
    breaks count against it, not only the passages' text)."""
    lines: list[str] = []
    budget = MAX_PROMPT_EVIDENCE_CHARS
    for number, item in enumerate(evidence, 1):
        title = f" ({_clip(item.title, 120)})" if item.title.strip() else ""
        head = f"[{number}]{title} "
        room = min(MAX_EVIDENCE_CHARS, budget - len(head) - (1 if lines else 0))
        if room < min(MIN_EXCERPT_CHARS, len(" ".join(item.text.split()))):
            break
        text = _excerpt(item.text, claim, room)
        lines.append(head + text)
        budget -= len(lines[-1]) + (1 if len(lines) > 1 else 0)
    return "\n".join(lines) if lines else "(no evidence)"


MAX_COMPLETION_TOKENS = 4  # one label token; room for the end token, a multi-token label shows up
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}


def prompt_claim(claim: str) -> str:
    """The claim as the prompt shows it: canonical Unicode (NFC), whitespace collapsed. The verdict cache keys
    claims the same way (cache.normalize_claim), so two claims sharing a cached verdict read alike to the LLM:
    "café" written decomposed (macOS text) got its own prompt tokens but the composed form's cached verdict."""
    return " ".join(unicodedata.normalize("NFC", claim).split())


def messages(claim: str, evidence: Sequence[Evidence]) -> list[dict[str, str]]:
    claim = prompt_claim(claim)
    user = USER_TEMPLATE.format(evidence=format_evidence(evidence, claim), claim=claim)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def request_body(model: str, claim: str, evidence: Sequence[Evidence]) -> dict[str, Any]:
    """One chat completion: the label through structured outputs, its probability through logprobs."""
    return {
        "model": model,
        "messages": messages(claim, evidence),
        "temperature": 0,
        "seed": SEED,
        "max_completion_tokens": MAX_COMPLETION_TOKENS,
        "logprobs": True,
        "top_logprobs": TOP_LOGPROBS,
        # vLLM >= 0.10.2; the older `guided_choice` is silently ignored from 0.12 on.
        "structured_outputs": {"choice": list(LABELS)},
        # Reasoning models must answer at once: a thinking block would come before the label token.
        "chat_template_kwargs": dict(CHAT_TEMPLATE_KWARGS),
    }


def _version() -> str:
    spec = {
        "name": PROMPT_NAME, "system": SYSTEM_PROMPT, "user": USER_TEMPLATE,
        "labels": {v.value: t for v, t in VERBALIZERS.items()}, "seed": SEED, "temperature": 0,
        "top_logprobs": TOP_LOGPROBS, "max_evidence_chars": MAX_EVIDENCE_CHARS,
        "max_prompt_evidence_chars": MAX_PROMPT_EVIDENCE_CHARS, "excerpt": EXCERPT,
        "evidence_budget": EVIDENCE_BUDGET, "min_excerpt_chars": MIN_EXCERPT_CHARS,
        "format": "structured_outputs.choice", "claim": "NFC, whitespace collapsed",
        "max_completion_tokens": MAX_COMPLETION_TOKENS, "chat_template_kwargs": CHAT_TEMPLATE_KWARGS,
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    return f"{PROMPT_NAME}@{digest}"


PROMPT_VERSION = _version()
