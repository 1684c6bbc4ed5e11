"""kill -9 of a real `kgverify kb build` / `kb add` process leaves the published KB loadable; SIGTERM and
Ctrl-C also clean up after themselves and say so."""

import json
import os
import signal
import subprocess
import sys

import pytest

from kb.build import build_kb
from kb.ingest import Document
from kb.knowledge_base import FaissKnowledgeBase
from kb.layout import VERSIONS_DIR, current_version
from server.pipeline.types import RetrievalMode
from tests.conftest import REPO, takes_ctrl_c

OLD = [Document("old", "Digoxin toxicity causes nausea and visual changes such as yellow vision.", "https://ex/dig")]


def _corpus(path, n):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"n{i}", "text": f"Note {i}: patient {i} received {i % 7 + 1} mg of drug {i}. "
                                                        f"Follow-up visit {i} was uneventful."}) + "\n")
    return path


def _run_until(args, marker: str, sig=signal.SIGKILL) -> tuple[int, str]:
    """Starts `python -m kb ARGS`, sends sig once stderr shows marker; returns (exit status, all stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "kb", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=takes_ctrl_c)
    seen = b""
    try:
        while marker.encode() not in seen:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            seen += chunk
        proc.send_signal(sig)
        status = proc.wait(60)
        return status, (seen + proc.stderr.read()).decode(errors="replace")
    finally:
        proc.kill()
        proc.stderr.close()


@pytest.fixture()
def old_kb(tmp_path, embedder):
    out = tmp_path / "kb"
    manifest = build_kb(OLD, out, embedder, progress=False)
    return out, manifest.kb_id


def _assert_serves(out, embedder, kb_ids=None):
    kb = FaissKnowledgeBase.load(out, embedder, verify="full")
    assert kb_ids is None or kb.info.kb_id in kb_ids
    assert kb.search(["yellow vision"], 1, RetrievalMode.HYBRID)[0][0].fact_id == "old"
    return kb


def test_kill_9_while_embedding_leaves_the_old_kb_loadable(old_kb, embedder, tmp_path):
    out, old_id = old_kb
    corpus = _corpus(tmp_path / "new.jsonl", 3000)
    status, stderr = _run_until(["build", "--input", str(corpus), "--output", str(out)], "documents:")
    assert status == -signal.SIGKILL, stderr
    assert "published" not in stderr
    staged = [p.name for p in (out / VERSIONS_DIR).iterdir() if p.name.startswith(".tmp-")]
    assert staged, "the build died before it started writing"
    _assert_serves(out, embedder, {old_id})
    # The next writer clears the dead build's leftovers and publishes normally.
    build_kb(OLD + [Document("x", "Atropine treats symptomatic bradycardia.")], out, embedder, progress=False)
    assert not [p for p in (out / VERSIONS_DIR).iterdir() if p.name.startswith(".tmp-")]
    assert current_version(out).name == "v000002"


def test_kill_9_after_embedding_leaves_an_old_or_new_kb_never_a_broken_one(old_kb, embedder, tmp_path):
    out, old_id = old_kb
    corpus = _corpus(tmp_path / "new.jsonl", 20)
    _, stderr = _run_until(["add", str(out), "--input", str(corpus), "--no-progress"], "indexing")
    assert "indexing" in stderr, stderr
    kb = _assert_serves(out, embedder, {old_id, *([] if "published" not in stderr else [_published_id(stderr)])}
                        if "published" in stderr else None)
    # Killed before or after the atomic switch: either way a whole version, verified byte for byte.
    assert (kb.info.kb_id, kb.info.num_facts) == (old_id, 1) or \
        (kb.manifest.build["parent"], kb.info.num_facts) == (old_id, 21)


def _published_id(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if "published" in line)
    return line.split("(")[1].split(":")[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_while_embedding_cleans_up_and_says_the_kb_is_unchanged(old_kb, embedder, tmp_path, sig):
    out, old_id = old_kb
    corpus = _corpus(tmp_path / "new.jsonl", 3000)
    status, stderr = _run_until(["add", str(out), "--input", str(corpus)], "documents:", sig)
    assert status == 130, stderr
    assert f"interrupted; {out} is as it was (nothing was published)" in stderr and "Traceback" not in stderr
    assert not [p for p in (out / VERSIONS_DIR).iterdir() if p.name.startswith(".tmp-")]  # staging removed
    _assert_serves(out, embedder, {old_id})
