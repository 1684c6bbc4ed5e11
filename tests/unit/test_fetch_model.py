"""scripts/fetch_model.py (docker-compose's model-fetch): only the files vLLM loads, a cache fallback offline."""

import importlib.util
import types

import pytest
import yaml

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "fetch_model.py"


@pytest.fixture(scope="module")
def fetch():
    spec = importlib.util.spec_from_file_location("fetch_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", ".gitattributes",
          "README.md", "LICENSE"]


def test_sharded_safetensors_skip_the_original_copy(fetch):
    # Llama 3.x: the same weights again as original/consolidated.00.pth (+ its tokenizer and params).
    files = CONFIG + ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                      "model.safetensors.index.json", "original/consolidated.00.pth", "original/params.json",
                      "original/tokenizer.model"]
    keep, skip = fetch.select(files)
    assert set(keep) == set(CONFIG) | {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                       "model.safetensors.index.json"}
    assert skip == ["original/consolidated.00.pth", "original/params.json", "original/tokenizer.model"]


def test_consolidated_and_bin_copies_are_skipped_beside_sharded_safetensors(fetch):
    # Mistral v0.3: consolidated.safetensors beside the shards; older repos: pytorch_model*.bin beside them.
    files = CONFIG + ["consolidated.safetensors", "model-00001-of-00003.safetensors",
                      "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                      "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json", "params.json",
                      "tokenizer.model.v3", "flax_model.msgpack", "model.gguf", "onnx/model.onnx"]
    keep, skip = fetch.select(files)
    assert [f for f in keep if f.endswith(fetch.WEIGHTS)] == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]
    assert {"consolidated.safetensors", "pytorch_model-00001-of-00002.bin", "flax_model.msgpack", "model.gguf",
            "onnx/model.onnx"} == set(skip)
    assert {"params.json", "tokenizer.model.v3", "pytorch_model.bin.index.json"} <= set(keep)  # small, harmless


def test_bin_only_and_consolidated_only_repositories_keep_their_weights(fetch):
    keep, _ = fetch.select(CONFIG + ["pytorch_model.bin", "training_args.bin"])
    assert "pytorch_model.bin" in keep and "training_args.bin" not in keep
    keep, _ = fetch.select(CONFIG + ["consolidated.safetensors", "params.json"])
    assert "consolidated.safetensors" in keep


def _hub(monkeypatch, fetch, *, info=None, error=None, cached=None):
    """Stand-ins for huggingface_hub's HfApi.model_info and snapshot_download; returns the downloads asked for."""
    import huggingface_hub

    calls = []

    class Api:
        def model_info(self, model, files_metadata, token):
            assert files_metadata
            if error is not None:
                raise error
            return info

    def snapshot_download(model, revision=None, allow_patterns=None, token=None, local_files_only=False):
        calls.append({"model": model, "revision": revision, "allow": allow_patterns, "local": local_files_only})
        if local_files_only and cached is None:
            raise FileNotFoundError("not cached")
        return cached or "/cache/snapshot"

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def _info(files):
    return types.SimpleNamespace(sha="a" * 40, siblings=[types.SimpleNamespace(rfilename=f, size=2_000_000_000)
                                                          for f in files])


def test_main_downloads_the_selection_of_main(fetch, monkeypatch, capsys):
    monkeypatch.setenv("MODEL", "org/model")
    files = CONFIG + ["model.safetensors", "original/consolidated.00.pth"]
    calls = _hub(monkeypatch, fetch, info=_info(files))
    assert fetch.main() == 0
    assert calls == [{"model": "org/model", "revision": None, "allow": sorted(CONFIG + ["model.safetensors"]),
                      "local": False}]
    out = capsys.readouterr().out
    assert "skipping 1 files vLLM does not load (2.0 GB): original/consolidated.00.pth" in out


def test_main_uses_a_cached_copy_when_the_hub_is_unreachable(fetch, monkeypatch, capsys):
    monkeypatch.setenv("MODEL", "org/model")
    calls = _hub(monkeypatch, fetch, error=ConnectionError("no route"), cached="/cache/org-model")
    assert fetch.main() == 0
    assert calls[0]["local"] and "using the cached org/model" in capsys.readouterr().out
    calls = _hub(monkeypatch, fetch, error=ConnectionError("no route"))
    assert fetch.main() == 1
    assert "not in the cache" in capsys.readouterr().err


def test_main_fails_clearly_without_model_or_weights_or_access(fetch, monkeypatch, capsys):
    from huggingface_hub.utils import RepositoryNotFoundError

    monkeypatch.delenv("MODEL", raising=False)
    assert fetch.main() == 64 and "MODEL is not set" in capsys.readouterr().err
    monkeypatch.setenv("MODEL", "org/model")
    calls = _hub(monkeypatch, fetch, info=_info(CONFIG + ["original/consolidated.00.pth"]))
    assert fetch.main() == 1 and "no safetensors or .bin weights" in capsys.readouterr().err and not calls
    refused = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # its constructor wants an HTTP response
    Exception.__init__(refused, "404 Client Error")
    calls = _hub(monkeypatch, fetch, error=refused, cached="/cache/org-model")
    assert fetch.main() == 1 and "refused org/model" in capsys.readouterr().err and not calls


def test_compose_runs_the_script_mounted_read_only():
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["model-fetch"]
    target = service["entrypoint"][-1]
    assert service["entrypoint"][0] == "python3"
    assert f"./scripts/fetch_model.py:{target}:ro" in service["volumes"]
