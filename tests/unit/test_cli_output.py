"""What the kgverify commands print: a reader that closes stdout early (`| head`), and split's JSON."""

import json
import os
import subprocess
import sys

from client.cli import main
from client.convert import split_result
from kb.build import build_kb
from kb.ingest import Document
from kgverify.v1 import knowledge_service_pb2 as kpb
from tests.conftest import REPO


def _with_closed_stdout(*args) -> subprocess.CompletedProcess:
    """Runs `python ARGS` with stdout a pipe whose reader has already gone (as `| head -1` after its line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    try:
        return subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=write_end, stderr=subprocess.PIPE,
                              timeout=300)
    finally:
        os.close(write_end)


def test_kgverify_with_a_closed_stdout_exits_quietly():
    done = _with_closed_stdout("-m", "client.cli", "config", "--table")
    assert done.returncode == 141 and done.stderr == b"", done.stderr.decode()


def test_kb_search_with_a_closed_stdout_exits_quietly(tmp_path, embedder):
    build_kb([Document("w", "Warfarin is monitored with the INR.")], tmp_path / "kb", embedder, progress=False)
    done = _with_closed_stdout("-m", "kb", "search", str(tmp_path / "kb"), "warfarin", "--json")
    assert done.returncode == 141 and b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr, \
        done.stderr.decode()


def test_split_json_gives_each_claims_no_knowledge_flag_locally_and_from_a_server(capsys):
    text = "Let me think step by step. Warfarin is a vitamin K antagonist."
    assert main(["split", "--text", text]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    claims = [c for s in steps for c in s["claims"]]
    assert claims and all(set(c) == {"text", "start", "end", "no_knowledge"} for c in claims)
    assert [c["no_knowledge"] for c in claims] == [True, False]  # planning, then a claim to check

    # a server's split (SplitResult.to_dict), as `kgverify split --server` prints it
    message = kpb.SplitReasoningResponse(steps=[kpb.Step(
        index=0, text="So the answer is B.", start=0, end=19, no_knowledge=True,
        claims=[kpb.Claim(text="So the answer is B.", start=0, end=19, no_knowledge=True)])])
    assert split_result(message).to_dict()["steps"][0]["claims"] == [
        {"text": "So the answer is B.", "start": 0, "end": 19, "no_knowledge": True}]


def test_split_json_names_the_text_its_offsets_index_and_the_splitter(capsys):
    text = "First, recall heparin.\r\nProtamine neutralizes heparin."
    assert main(["split", "--text", text]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["splitter"].startswith("rules/")
    assert all(shown["chain_text"][s["start"]:s["end"]] == s["text"] for s in shown["steps"])
    message = kpb.SplitReasoningResponse(chain_text="A. B.", splitter="llm:decomposer", steps=[
        kpb.Step(index=0, text="A.", start=0, end=2), kpb.Step(index=1, text="B.", start=3, end=5)])
    assert {k: split_result(message).to_dict()[k] for k in ("chain_text", "splitter")} == {
        "chain_text": "A. B.", "splitter": "llm:decomposer"}



def test_the_commands_turn_grpc_cores_info_lines_off_unless_asked_for(monkeypatch, capsys):
    """gRPC's core printed INFO lines such as "Got goaway [2] err=UNAVAILABLE … Cancelling all calls" on stderr
    when a server stopped under a stream; it reads GRPC_VERBOSITY when its first channel or server starts."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    assert main(["config"]) == 0
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    assert main(["config"]) == 0
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"
