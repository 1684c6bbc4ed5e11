"""InfoGain review: the local causal LM on models whose layout or tokenizer differs from the tiny Llama/GPT-2 ones."""

from __future__ import annotations

import asyncio
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from server.backends.lm.causal_lm import LmEstimator  # noqa: E402
from server.backends.lm.transformers_lm import TransformersCausalLm  # noqa: E402
from server.pipeline.deadline import NO_DEADLINE  # noqa: E402
from server.pipeline.runtime import Blocking  # noqa: E402
from tests.helpers.tiny_lm import _train_tokenizer, chain, one_torch_thread  # noqa: E402

QUESTION = "Question: which drug lowers the blood glucose?"
TOL = 1e-4
WINDOW = 40  # longer than the load-time probe's 24 tokens, shorter than the chains below

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@functools.cache
def sliding_window_lm() -> Path:
    """A tiny random Mistral whose layers attend to the last WINDOW tokens only."""
    from transformers import AutoModelForCausalLM, MistralConfig

    tok = _train_tokenizer("llama")
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           initializer_range=0.3, sliding_window=WINDOW, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    root = Path(tempfile.mkdtemp(prefix="kgv-mistral-"))
    import atexit

    atexit.register(shutil.rmtree, root, ignore_errors=True)
    AutoModelForCausalLM.from_config(config).eval().save_pretrained(root / "m")
    tok.save_pretrained(root / "m")
    return root / "m"


def independent_nll(path: Path, steps: list[str], target: str) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(path)
    answer = tok(" " + target, add_special_tokens=False)["input_ids"]
    out, context = [], QUESTION
    for i in range(len(steps) + 1):
        if i:
            context += "\n" + steps[i - 1]
        prefix = tok(context + " Answer:")["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prefix + answer])).logits[0].float(), -1)
        out.append(-sum(logp[len(prefix) - 1 + j, a].item() for j, a in enumerate(answer)))
    return out


@pytest.mark.parametrize("strategy", ["auto", "packed"])
def test_a_sliding_window_model_is_scored_with_its_window(strategy):
    """A custom 4D mask overrides the model's sliding window, and the 24-token probe cannot see that: packed
    passes gave L_i off by nats on chains longer than the window. Such models are scored with the walk."""
    path = sliding_window_lm()
    steps, target = chain(5, seed=1), "insulin"
    lm = TransformersCausalLm(str(path), Blocking(None), strategy=strategy)
    assert lm.strategy == "walk" and lm.local_window == WINDOW
    scores = asyncio.run(LmEstimator(lm).score_prefixes(QUESTION, steps, target, NO_DEADLINE))
    expected = independent_nll(path, steps, target)
    assert max(abs(a - b) for a, b in zip(scores.nll, expected)) < TOL


def test_the_local_window_is_read_from_every_kind_of_config():
    from types import SimpleNamespace as NS

    from server.backends.lm.transformers_lm import _local_attention_window as window

    assert window(NS(sliding_window=4096)) == 4096  # Mistral v0.1
    assert window(NS(sliding_window=None)) is None  # Mistral v0.2+, Llama
    assert window(NS(layer_types=["full_attention"] * 4, sliding_window=4096)) is None  # Qwen2 default
    assert window(NS(layer_types=["sliding_attention", "full_attention"], sliding_window=512)) == 512  # Gemma
    assert window(NS(attention_layers=["global", "local"], window_size=256)) == 256  # GPT-Neo
    assert window(NS(attention_layers=["global", "global"], window_size=256)) is None


def test_the_context_length_of_a_multimodal_config_is_its_text_models():
    from transformers import Gemma3Config, GPT2Config, LlamaConfig

    from server.backends.lm.transformers_lm import _context_length, _local_attention_window

    config = Gemma3Config()  # what AutoModelForCausalLM loads for Gemma-3 checkpoints
    assert _context_length(config) == config.get_text_config().max_position_embeddings
    assert _local_attention_window(config) == config.get_text_config().sliding_window
    assert _context_length(LlamaConfig(max_position_embeddings=4096)) == 4096
    assert _context_length(GPT2Config(n_positions=1024)) == 1024
