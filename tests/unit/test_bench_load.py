"""bench/load.py's raw model ceiling computes the same work the server does (it broke silently once: the
batching suite's child process failed on a removed import, and only a full bench run showed it)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from server.backends.judges.nli_model import DEFAULT_MODEL_DIR, NliModel
from tests.conftest import REPO, make_settings


def _bench_load():
    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "config.json").exists(), reason="the NLI judge is not exported")
def test_chain_work_gives_claims_judge_pairs_and_fitted_info_gain_pairs(cache_dir, demo_kb_path, embedder):
    from kb.knowledge_base import FaissKnowledgeBase, LoadOptions

    settings = make_settings(cache_dir)
    kb = FaissKnowledgeBase.load(demo_kb_path, embedder, LoadOptions.from_settings(settings.kb))
    nli = NliModel.load(quantize=False)
    chain = {"question": "Which drug reverses heparin?", "answer": "Protamine sulfate",
             "steps": ["Heparin is an anticoagulant.", "Protamine sulfate neutralizes heparin."]}
    [(claims, pairs, info_gain)] = _bench_load().chain_work([chain], embedder, kb, settings, nli)
    assert claims and pairs and len(info_gain) == 3
    assert [premise.count("\n") for premise, _ in info_gain] == [0, 1, 2]
    assert all(hypothesis == "The answer is Protamine sulfate." for _, hypothesis in info_gain)
