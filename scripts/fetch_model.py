"""Download the files vLLM serves a Hugging Face model from, and nothing else (docker-compose's model-fetch).

Runs inside the vllm/vllm-openai image (its huggingface_hub). A whole-repository download can be several times
the model: Llama repositories carry an `original/` copy of the weights, Mistral's a `consolidated.safetensors`
beside the sharded ones, older ones `pytorch_model*.bin` beside safetensors, some ONNX, GGUF or Flax exports.
vLLM loads the top-level safetensors (else the `.bin` shards) and reads the top-level config, tokenizer and
generation files, so those are fetched; the rest is skipped and listed with its size.

    MODEL=Qwen/Qwen2.5-7B-Instruct python3 scripts/fetch_model.py

When the Hub cannot be reached, a complete earlier download in the cache is used as it is.
"""

from __future__ import annotations

import os
import sys

WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".onnx", ".ot", ".tflite")


def select(files: list[str]) -> tuple[list[str], list[str]]:
    """(files to fetch, files skipped) of a repository listing."""
    top = [f for f in files if "/" not in f]
    safetensors = [f for f in top if f.endswith(".safetensors")]
    sharded = [f for f in safetensors if not f.startswith("consolidated")]
    if sharded:
        weights = sharded  # the transformers layout; consolidated.* is the same model in Mistral's own format
    elif safetensors:
        weights = safetensors
    else:
        weights = [f for f in top if f.endswith((".bin", ".pt")) and not f.startswith(("training_args", "optimizer"))]
    keep = [f for f in top if not f.endswith(WEIGHTS)] + weights
    kept = set(keep)
    return sorted(keep), sorted(f for f in files if f not in kept)


def _gb(sizes: dict[str, int | None], names: list[str]) -> str:
    return f"{sum(sizes.get(n) or 0 for n in names) / 1e9:.1f} GB"


def main() -> int:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError

    model = os.environ.get("MODEL", "").strip()
    if not model:
        print("model-fetch: MODEL is not set (a Hugging Face repository id such as Qwen/Qwen2.5-7B-Instruct)",
              file=sys.stderr)
        return 64
    token = os.environ.get("HF_TOKEN") or None
    try:
        info = HfApi().model_info(model, files_metadata=True, token=token)
    except (RepositoryNotFoundError, GatedRepoError) as exc:  # no such repository, or HF_TOKEN lacks access
        print(f"model-fetch: the Hub refused {model}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the Hub unreachable or failing (connection errors, timeouts, 5xx, offline mode)
        try:
            path = snapshot_download(model, local_files_only=True)
        except Exception:
            print(f"model-fetch: cannot reach the Hub ({exc}) and {model} is not in the cache", file=sys.stderr)
            return 1
        print(f"model-fetch: the Hub is unreachable; using the cached {model} at {path}")
        return 0
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    keep, skip = select(list(sizes))
    if not any(f.endswith(WEIGHTS) for f in keep):
        print(f"model-fetch: {model} has no safetensors or .bin weights at its top level: {sorted(sizes)}",
              file=sys.stderr)
        return 1
    print(f"model-fetch: {model}: {len(keep)} files, {_gb(sizes, keep)}"
          + (f"; skipping {len(skip)} files vLLM does not load ({_gb(sizes, skip)}): {', '.join(skip)}" if skip else ""))
    # No revision pin: vLLM, offline, resolves the cache's refs/main, which a download by commit hash leaves unset.
    path = snapshot_download(model, allow_patterns=keep, token=token)
    print(f"model-fetch: {model} at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
