"""The CLI commands that score on a --server: they wait for the services their request needs and no others, and
every one of them reaches a TLS server with a bearer token through the same options."""

import asyncio
import datetime
import ipaddress
import json
import os
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client.aio import AsyncVerifierClient
from client.cli import build_parser
from server.health import INFO_GAIN, KNOWLEDGE
from server.app import start_server
from server.backends import registry
from tests.conftest import REPO, make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

FACT = "Protamine sulfate neutralizes heparin."
TOKEN = "cli-test-token"
SECURITY_OPTIONS = ("--tls-ca", "--tls-cert", "--tls-key", "--token-file")


async def _cli(*args, timeout_s=90.0):
    """(exit status, stdout, stderr) of `python -m client.cli ARGS` in a child process (the server under test
    runs on this event loop, so the command must not block it); killed after timeout_s."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "client.cli", *map(str, args), cwd=REPO,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"kgverify {' '.join(map(str, args))} still running after {timeout_s} s")
    return proc.returncode, out.decode(), err.decode()


async def _server(cache_dir, monkeypatch, judge=None, **sections):
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: judge or FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    server = await start_server(make_settings(cache_dir, **sections), ["127.0.0.1:0"])
    await server.wait_ready(300)
    return server


def _evaluate(address, *extra):
    return ("evaluate", "--question", "Which drug reverses heparin?", "--reasoning", FACT, "--answer", "Protamine",
            "--json", "--server", address, *extra)


def _rows(path, n=3, **fields):
    path.write_text("".join(json.dumps({"id": f"r{i}", "question": "Which drug reverses heparin?",
                                        "steps": [FACT], "answer": "Protamine", **fields}) + "\n" for i in range(n)))


async def test_context_only_scoring_needs_no_kb_so_a_server_whose_kb_failed_to_load_still_scores_it(
        cache_dir, demo_kb_path, monkeypatch, tmp_path):
    from kb.knowledge_base import FaissKnowledgeBase
    from server.pipeline.errors import KnowledgeBaseCorruptError

    def corrupt(*args, **kwargs):
        raise KnowledgeBaseCorruptError("index.faiss fails its checksum")

    monkeypatch.setattr(FaissKnowledgeBase, "load", corrupt)
    server = await _server(cache_dir, monkeypatch, kb={"path": tmp_path / "kb"})
    try:
        address = server.addresses[0]
        context = tmp_path / "context.txt"
        context.write_text(FACT + "\n")
        code, out, err = await _cli(*_evaluate(address, "--context-file", context))
        assert code == 0, err
        assert json.loads(out)["knowledge_index"] == 1.0
        code, _, err = await _cli(*_evaluate(address))  # KI against the KB: it needs the KB, which will not serve
        assert code == 2 and "KB_CORRUPT" in err, err
        source, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        _rows(source, context=[FACT])
        code, _, err = await _cli("batch", "--no-progress", "--input", source, "--output", journal,
                                  "--server", address)
        assert code == 0, err
    finally:
        await server.stop(0)


async def test_infogain_alone_does_not_wait_for_a_judge_that_is_down(cache_dir, demo_kb_path, monkeypatch, tmp_path):
    judge = FakeJudge()
    server = await _server(cache_dir, monkeypatch, judge, server={"health_interval_s": 0.2})
    try:
        address = server.addresses[0]
        judge.down = True  # the judge's outage turns the knowledge service NOT_SERVING; it still takes calls
        async with AsyncVerifierClient(address) as client:
            while await client.health(KNOWLEDGE) != "NOT_SERVING":
                await asyncio.sleep(0.05)
            assert await client.health(INFO_GAIN) == "SERVING"
        started = time.monotonic()
        code, out, err = await _cli(*_evaluate(address, "--metrics", "infogain"), timeout_s=60)
        assert code == 0, err
        record = json.loads(out)
        assert record["info_gain"] is not None and record["knowledge_index"] is None
        source, journal = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
        _rows(source)
        code, _, err = await _cli("batch", "--no-progress", "--input", source, "--output", journal,
                                  "--metrics", "infogain", "--server", address, timeout_s=60)
        assert code == 0 and "waiting for" not in err, err
        assert time.monotonic() - started < 60
        assert [json.loads(line)["status"] for line in journal.read_text().splitlines()] == ["ok"] * 3
    finally:
        await server.stop(0)


def test_the_help_of_commands_that_wait_for_a_server_gives_the_wait_limits():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command, limit in (("evaluate", "300 s"), ("batch", "600 s"), ("demo", "300 s")):
        text = " ".join(subparsers[command].format_help().split())
        assert "3 s" in text and limit in text and "the services the" in text, text


def test_every_command_that_connects_to_a_server_has_the_same_security_options():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    kb = next(a for a in subparsers["kb"]._actions if a.dest == "kb_command").choices
    commands = {"split": subparsers["split"], "evaluate": subparsers["evaluate"], "batch": subparsers["batch"],
                "demo": subparsers["demo"], "kb reload": kb["reload"]}
    options = {}
    for name, command in commands.items():
        assert any("--server" in a.option_strings for a in command._actions), name
        options[name] = {a.option_strings[0]: (a.help, a.type) for a in command._actions
                         if a.option_strings and a.option_strings[0] in SECURITY_OPTIONS}
    assert set(options["batch"]) == set(SECURITY_OPTIONS)
    assert all(found == options["batch"] for found in options.values()), options


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(root, name, key, cert):
    (root / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (root / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _tls_files(root):
    """A CA and a server certificate for localhost / 127.0.0.1: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject, key, ca):
        builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name("cli test CA"))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    _pem(root, "ca", ca_key, cert("cli test CA", ca_key, True))
    _pem(root, "server", server_key, cert("server", server_key, False))
    return root / "ca.pem", root / "server.pem", root / "server.key"


async def test_evaluate_split_and_demo_reach_a_tls_server_with_a_token(cache_dir, demo_kb_path, monkeypatch,
                                                                       tmp_path):
    ca, cert, key = _tls_files(tmp_path)
    server = await _server(cache_dir, monkeypatch,
                           security={"tls_cert_file": cert, "tls_key_file": key, "auth_tokens": [TOKEN]})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    secure = ("--tls-ca", ca, "--token-file", token_file)
    try:
        address = server.addresses[0]
        code, out, err = await _cli(*_evaluate(address, *secure))
        assert code == 0 and json.loads(out)["knowledge_index"] == 1.0, err
        code, out, err = await _cli("split", "--text", FACT, "--server", address, *secure)
        assert code == 0 and json.loads(out)["steps"][0]["text"] == FACT, err
        code, out, err = await _cli("demo", "--server", address, *secure)
        assert code == 0 and "steps got the verdict they were written for" in out, err

        code, _, err = await _cli(*_evaluate(address, "--tls-ca", ca))  # no token: refused, says what to pass
        assert code == 2 and "UNAUTHENTICATED" in err and "--token-file" in err, err
        code, _, err = await _cli("split", "--text", FACT, "--server", address, "--tls-cert", cert)
        assert code == 2 and "--tls-key" in err and "Traceback" not in err, err
    finally:
        await server.stop(0)
