"""The LLM judge's request, prompt version and reading of labels and logprobs (pure functions)."""

from __future__ import annotations

import copy
import math

import pytest

from server.backends.judges import prompts
from server.backends.judges.vllm_judge import JudgeOutputError, parse_judgement
from server.pipeline.types import Evidence, EvidenceOrigin, Verdict

EVIDENCE = [
    Evidence("pharm-0011", "Warfarin is a vitamin K antagonist.", "BNF", "Warfarin", 0.8, EvidenceOrigin.KNOWLEDGE_BASE),
    Evidence("context:0", "Dabigatran is a direct thrombin inhibitor.", "", "", 0.6, EvidenceOrigin.CONTEXT),
]


def response(content: str, first: tuple[str, float], top: list[tuple[str, float]]) -> dict:
    """A chat completion as vLLM sends it: the top list always holds the top_logprobs entries asked for (other
    tokens of the vocabulary fill it after the ones given)."""
    filler = [(f"tok{i}", -30.0 - i) for i in range(max(0, prompts.TOP_LOGPROBS - len(top)))]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": [{"token": first[0], "logprob": first[1], "bytes": [],
                                                   "top_logprobs": [{"token": t, "logprob": lp, "bytes": []}
                                                                    for t, lp in [*top, *filler]]}]},
                         "finish_reason": "stop"}]}


def test_request_constrains_the_label_and_asks_for_logprobs():
    body = prompts.request_body("judge", "Warfarin is a direct thrombin inhibitor.", EVIDENCE)
    assert body["structured_outputs"] == {"choice": ["A", "B", "C"]}
    assert not [k for k in body if k.startswith("guided_")]  # removed in vLLM 0.12 and silently ignored
    assert body["temperature"] == 0 and body["seed"] == prompts.SEED
    assert body["logprobs"] is True and body["top_logprobs"] >= 3
    user = body["messages"][-1]["content"]
    assert "[1] (Warfarin) Warfarin is a vitamin K antagonist." in user
    assert "[2] Dabigatran is a direct thrombin inhibitor." in user
    assert "Claim: Warfarin is a direct thrombin inhibitor." in user


def test_labels_are_single_characters_and_distinct():
    assert len(set(prompts.LABELS)) == 3 and all(len(label) == 1 for label in prompts.LABELS)


def test_long_evidence_is_clipped_within_the_prompt_budget():
    huge = [Evidence(f"f{i}", "word " * 5_000, "", "", 0.1, EvidenceOrigin.CONTEXT) for i in range(20)]
    text = prompts.format_evidence(huge)
    assert len(text) < prompts.MAX_PROMPT_EVIDENCE_CHARS + 20 * 20
    assert text.startswith("[1] ") and "…" in text
    assert prompts.format_evidence([]) == "(no evidence)"


def test_a_long_passage_shows_the_sentences_about_the_claim_not_only_its_opening():
    # A long abstract whose fact about the claim comes after 1,500 characters of other findings.
    filler = " ".join(f"Finding {i} concerned the cohort's baseline characteristics." for i in range(40))
    passage = filler + " Dabigatran directly inhibits thrombin. " + filler
    body = prompts.request_body("judge", "Dabigatran is a direct thrombin inhibitor.",
                                [Evidence("ctx", passage, "", "", 0.9, EvidenceOrigin.CONTEXT)])
    user = body["messages"][-1]["content"]
    shown = user.split("[1] ", 1)[1].split("\n\nClaim:", 1)[0]
    assert "Dabigatran directly inhibits thrombin." in shown
    assert shown.startswith("…") and shown.endswith("…") and len(shown) <= prompts.MAX_EVIDENCE_CHARS
    # without the claim's words in it, a long passage is shown from its start
    assert prompts.format_evidence([Evidence("c", filler, "", "", 0.9, EvidenceOrigin.CONTEXT)]).startswith(
        "[1] Finding 0")


def test_prompt_version_is_a_hash_of_everything_that_shapes_the_answer(monkeypatch):
    assert prompts.PROMPT_VERSION.startswith(prompts.PROMPT_NAME + "@")
    assert prompts._version() == prompts.PROMPT_VERSION  # stable across calls
    monkeypatch.setattr(prompts, "SYSTEM_PROMPT", prompts.SYSTEM_PROMPT + " Be brief.")
    assert prompts._version() != prompts.PROMPT_VERSION
    monkeypatch.undo()
    monkeypatch.setattr(prompts, "TOP_LOGPROBS", 5)
    assert prompts._version() != prompts.PROMPT_VERSION


def test_probabilities_are_renormalized_over_the_three_labels():
    verdict, probs = parse_judgement(response("B", ("B", -0.2), [("B", -0.2), ("A", -2.1), ("The", -4.0)]))
    assert verdict is Verdict.CONTRADICTED
    a, b = math.exp(-2.1), math.exp(-0.2)
    assert probs.supported == pytest.approx(a / (a + b)) and probs.contradicted == pytest.approx(b / (a + b))
    assert probs.not_enough_info == 0.0  # outside the returned top-k: counts as -9999


def test_variants_of_a_label_token_add_up():
    _, probs = parse_judgement(response("A", ("A", -0.5), [("A", -0.5), (" A", -1.0), ("C", -1.5)]))
    a, c = math.exp(-0.5) + math.exp(-1.0), math.exp(-1.5)
    assert probs.supported == pytest.approx(a / (a + c))


def test_clamped_minus_infinity_is_zero_probability():
    _, probs = parse_judgement(response("C", ("C", -0.01), [("C", -0.01), ("A", -9999.0), ("B", -9999.0)]))
    assert probs.not_enough_info == 1.0 and probs.supported == 0.0


@pytest.mark.parametrize("data, reason", [
    (response("The claim is supported.", ("The", -0.1), [("The", -0.1), ("A", -3.0)]), "unconstrained"),
    (response("", ("", -0.1), []), "unconstrained"),
    ({"choices": []}, "no message content"),
    ({"error": {"message": "boom"}}, "no message content"),
    ({"choices": [{"message": {"content": "A"}, "logprobs": None}]}, "no logprobs"),
    ({"choices": [{"message": {"content": "A"}, "logprobs": {"content": []}}]}, "no logprobs"),
    (response("A", ("Ab", -0.1), [("Ab", -0.1)]), "not a single token"),
    (response("A", ("A", -0.1), [("X", -0.1), ("Y", -0.3)]), None),  # the sampled token itself is a label
    (response("A", ("A", -9999.0), [("X", -0.1)]), "no label token"),
    (response("A", ("A", float("nan")), []), "invalid logprob"),
    (response("A", ("A", 0.7), []), "invalid logprob"),
    (response("A", ("A", -2.0), [("B", -0.1), ("A", -2.0)]), "disagrees"),
])
def test_unusable_output_is_an_error_never_a_made_up_score(data, reason):
    if reason is None:
        verdict, probs = parse_judgement(data)
        assert verdict is Verdict.SUPPORTED and probs.supported == 1.0
        return
    with pytest.raises(JudgeOutputError, match=reason):
        parse_judgement(copy.deepcopy(data))


def test_claims_that_share_a_cached_verdict_get_the_same_prompt():
    """The verdict cache keys claims by NFC with whitespace collapsed; the LLM prompt collapsed whitespace but kept
    a decomposed "é" (macOS text) as two code points: that claim read differently to the LLM than the composed
    one whose cached verdict it was served."""
    import unicodedata

    from server.backends.judges.cache import normalize_claim

    evidence = (Evidence("f1", "Café au lait contains milk.", "src", "", 0.9, EvidenceOrigin.KNOWLEDGE_BASE),)
    composed = "Café au lait contains milk."
    decomposed = unicodedata.normalize("NFD", "Café  au lait\ncontains milk.")
    assert decomposed != composed and normalize_claim(decomposed) == normalize_claim(composed)
    assert prompts.messages(decomposed, evidence) == prompts.messages(composed, evidence)
    assert composed in prompts.messages(decomposed, evidence)[1]["content"]
