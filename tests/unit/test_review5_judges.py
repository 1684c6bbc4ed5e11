"""The LLM judge's reading of vLLM logprobs and the shared client's parsing of large replies."""

from __future__ import annotations

import math

import pytest

from server.backends.judges import prompts
from server.backends.judges.vllm_judge import parse_judgement
from server.pipeline.types import Verdict


def chat_reply(content: str, first: tuple[str, float], top: list[tuple[str, float]]) -> dict:
    """A chat completion in vLLM 0.12's shape; the top list holds the top_logprobs entries asked for."""
    filler = [(f"<tok{i}>", -9999.0) for i in range(max(0, prompts.TOP_LOGPROBS - len(top)))]
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": [{"token": first[0], "logprob": first[1], "bytes": list(first[0].encode()),
                                                   "top_logprobs": [{"token": t, "logprob": lp,
                                                                     "bytes": list(t.encode())}
                                                                    for t, lp in [*top, *filler]]}]},
                         "finish_reason": "stop"}]}


def test_two_token_ids_that_decode_to_the_same_label_both_count():
    """vLLM >= 0.10 (V1 engine) applies the structured-output bitmask before it computes logprobs, so the top list
    holds every token the grammar allows. With a SentencePiece tokenizer with byte fallback (Llama 2, Mistral) the
    byte token <0x41> is allowed too and vLLM decodes it to "A", the same text as the token "A": the top list
    names "A" twice. The second, much less likely entry must not replace the first."""
    top = [("B", -0.4), ("A", -1.2), ("C", -3.0), ("A", -11.0), ("B", -12.5), ("C", -13.0)]
    verdict, probs = parse_judgement(chat_reply("B", ("B", -0.4), top))
    weights = {label: sum(math.exp(lp) for token, lp in top if token == label) for label in "ABC"}
    total = sum(weights.values())
    assert verdict is Verdict.CONTRADICTED
    assert probs.contradicted == pytest.approx(weights["B"] / total)
    assert probs.supported == pytest.approx(weights["A"] / total)
    assert probs.not_enough_info == pytest.approx(weights["C"] / total)


def test_the_sampled_token_outside_the_top_list_counts_once():
    top = [("X", -0.1), ("Y", -0.2)] + [(f"Z{i}", -0.5 - i / 100) for i in range(16)] + [("B", -3.0), ("C", -4.0)]
    verdict, probs = parse_judgement(chat_reply("A", ("A", -2.5), top))
    a, b, c = math.exp(-2.5), math.exp(-3.0), math.exp(-4.0)
    assert verdict is Verdict.SUPPORTED
    assert probs.supported == pytest.approx(a / (a + b + c))


@pytest.mark.parametrize("content, reasoning", [(None, "Okay, let me"), ("", "A")])
def test_an_answer_held_back_by_a_reasoning_parser_is_named_as_such(content, reasoning):
    """vLLM started with --reasoning-parser enforces structured outputs only after the model's reasoning ends:
    a model that reasons although enable_thinking is false spends the completion tokens on reasoning, content
    null (vLLM 0.12 shape, reasoning in message.reasoning_content). Saying that structured outputs were not
    applied sends the operator after the wrong setting."""
    from server.backends.judges.vllm_judge import JudgeOutputError

    data = chat_reply("A", ("Okay", -0.1), [("Okay", -0.1), ("We", -1.0)])
    data["choices"][0]["message"] = {"role": "assistant", "content": content, "reasoning_content": reasoning,
                                     "tool_calls": []}
    data["choices"][0]["finish_reason"] = "length"
    with pytest.raises(JudgeOutputError, match="--reasoning-parser") as caught:
        parse_judgement(data)
    assert "did not apply structured outputs" not in str(caught.value)
