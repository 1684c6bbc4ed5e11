"""InfoGain review: the pinned answer ids are the answer as it follows the cue, whatever the tokenizer's space rule."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("tokenizers")

from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.transformers_lm import encode  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from tests.helpers.tiny_lm import CORPUS, load_tiny_lm  # noqa: E402


def sentencepiece_style_tokenizer():
    """Llama-2 / Mistral-7B style: SentencePiece's dummy prefix (every text starts with "▁"), spaces are "▁"."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Pieces start at a "▁" as SentencePiece pieces do ("▁▁x" is "▁" + "▁x").
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


class TokenizerOnly:
    """The tokenizing half of a CausalLm."""

    name = "tokenizer-only"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    async def tokenize(self, texts, add_special_tokens, deadline):
        return encode(self.tokenizer, texts, add_special_tokens)


def tokenizers():
    yield "sentencepiece", sentencepiece_style_tokenizer()
    for style in ("llama", "gpt2"):
        yield style, load_tiny_lm(style)[1]


@pytest.mark.parametrize("name", ["sentencepiece", "llama", "gpt2"])
def test_the_scored_sequence_spells_the_cue_one_space_and_the_answer(name):
    """With a dummy-prefix tokenizer, tokens of " " + A began with a token of a second space: the LM scored
    "Answer:  insulin" (p of a lone "▁" included), not "Answer: insulin"."""
    tok = dict(tokenizers())[name]
    question, steps, target = "Question? Which drug lowers the blood glucose", ["The doctor checks the blood"], "insulin"
    seqs, n_answer = asyncio.run(LmEstimator(TokenizerOnly(tok)).answer_sequences(question, steps, target,
                                                                                    NO_DEADLINE))
    for seq, context in zip(seqs, (question, question + "\n" + steps[0])):
        assert tok.decode(seq, skip_special_tokens=True).endswith(" Answer: insulin")
        # the answer ids are the ones the answer has after the cue in the text tokenized as a whole
        assert list(seq[-n_answer:]) == tok(context + " Answer: " + target)["input_ids"][-n_answer:]
    assert n_answer == 1
