"""Tiny random causal LMs (Llama- and GPT-2-style) with BPE tokenizers trained in code, saved like real model dirs."""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from pathlib import Path

CORPUS = """\
The patient has a fever and a cough. The doctor checks the blood pressure and the heart rate.
Aspirin inhibits cyclooxygenase, so it reduces the synthesis of prostaglandins and thromboxane.
A low dose of aspirin is used to prevent a second heart attack. The kidney filters the blood.
Insulin lowers the blood glucose. Type 2 diabetes is treated with metformin, diet and exercise.
The answer is B because the drug blocks the receptor. Therefore the answer is the liver.
Step 1: read the question. Step 2: recall the facts. Step 3: compare the options.
If x = 3 and y = 4, then x + y = 7 and x * y = 12. The square of 5 is 25.
Vitamin D deficiency is common in winter. The bone needs calcium and vitamin D.
Penicillin kills bacteria by blocking the cell wall. Viruses do not respond to antibiotics.
The heart pumps blood through the arteries; the veins return it to the heart.
Let us think step by step. First, the question asks about the mechanism of the drug.
Next, we recall that the enzyme converts the substrate. Finally, we choose option C.
A. aspirin B. insulin C. metformin D. penicillin E. vitamin D
Question: which drug lowers the blood glucose? Answer: insulin.
"""
SPECIAL = {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "<pad>"}
WORDS = tuple(sorted({w.strip(".,:;?") for w in CORPUS.split() if w.strip(".,:;?").isalpha()}))


def _train_tokenizer(style: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL["unk"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["pad"]]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk"]))
    if style == "llama":
        # SentencePiece-like: spaces become "▁", and the tokenizer adds BOS.
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted(set(CORPUS.replace(" ", "▁")))
    else:
        # GPT-2-like: byte-level BPE, no special tokens added by default.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    if style == "llama":
        bos_id = tok.token_to_id(SPECIAL["bos"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{SPECIAL['bos']} $A", pair=f"{SPECIAL['bos']} $A $B", special_tokens=[(SPECIAL["bos"], bos_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["bos"], eos_token=SPECIAL["eos"],
                                       unk_token=SPECIAL["unk"], pad_token=SPECIAL["pad"], add_bos_token=True)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL["eos"], eos_token=SPECIAL["eos"],
                                   unk_token=SPECIAL["unk"], pad_token=SPECIAL["pad"])


def _config(style: str, vocab_size: int, size: str, tokenizer):
    from transformers import GPT2Config, LlamaConfig

    # tiny and medium for tests; 50m (about 48M parameters) for bench/info_gain.py.
    hidden, layers, heads = {"tiny": (64, 2, 4), "medium": (256, 4, 4), "50m": (768, 9, 12)}[size]
    if style == "llama":
        # A large init range makes the random model's predictions depend strongly on context.
        return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                           max_position_embeddings=16384, initializer_range=0.3, rope_theta=10000.0,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=2048,
                      initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def build_tiny_lm(style: str, directory: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Writes a random `llama` or `gpt2` model and its trained tokenizer to `directory` (save_pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _train_tokenizer(style)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(style, len(tokenizer), size, tokenizer))
    model.eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@functools.cache
def tiny_lm_path(style: str, size: str = "tiny") -> Path:
    """A model directory built once per test session (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix=f"kgv-{style}-{size}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_lm(style, root / "model", size)


@functools.cache
def load_tiny_lm(style: str, size: str = "tiny"):
    """(model, tokenizer) loaded from tiny_lm_path, fp32, eval mode (shared within the session)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_lm_path(style, size)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(path)


def chain(n_steps: int, seed: int = 0, words_per_step: tuple[int, int] = (4, 12)) -> list[str]:
    """n_steps reasoning steps made of corpus words (deterministic)."""
    rng = random.Random(seed)
    steps = []
    for i in range(n_steps):
        words = rng.choices(WORDS, k=rng.randint(*words_per_step))
        steps.append(f"Step {i + 1}: " + " ".join(words) + ".")
    return steps


def answer_of_tokens(tokenizer, n_tokens: int, seed: int = 0) -> str:
    """An answer whose pinned tokenization (" " + A, no special tokens) has exactly n_tokens tokens."""
    rng = random.Random(seed)
    candidates = list(WORDS)
    rng.shuffle(candidates)
    count = lambda text: len(tokenizer(" " + text, add_special_tokens=False)["input_ids"])  # noqa: E731
    if n_tokens == 1:
        for word in candidates:
            if count(word) == 1:
                return word
        raise AssertionError("no single-token word in the tiny vocabulary")
    words: list[str] = []
    for word in candidates * 4:
        trial = " ".join(words + [word])
        if count(trial) <= n_tokens:
            words.append(word)
        if words and count(" ".join(words)) == n_tokens:
            return " ".join(words)
    raise AssertionError(f"could not build an answer of {n_tokens} tokens")


def one_torch_thread():
    """Generator for an autouse fixture: tiny models run fastest on one thread on a shared 2-core machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
