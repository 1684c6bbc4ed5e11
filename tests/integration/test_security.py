"""TLS, mTLS and bearer-token auth refuse what they should, with certificates generated here."""

import asyncio
import datetime
import ipaddress
import json
import logging

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from client import AsyncVerifierClient, VerifierError
from client.cli import main
from server.app import start_server
from server.backends import registry
from server.config import SecuritySettings
from server.healthcheck import main as healthcheck
from tests.conftest import make_settings
from tests.fakes.backends import FakeEstimator, FakeJudge

CHAIN = {"question": "Which drug reverses heparin?", "steps": ["Protamine sulfate neutralizes heparin."],
         "answer": "Protamine", "context": ["Protamine sulfate is the antidote that neutralizes heparin."]}
TOKEN = "s3cret-token-for-tests"


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject, key, issuer, issuer_key, *, ca=False, server=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA with a server and a client certificate, and a rogue CA with its own client certificate."""

    def __init__(self, root):
        self.root = root
        ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        self._write("ca", ca_key, _cert("kgverify test CA", ca_key, "kgverify test CA", ca_key, ca=True))
        self._write("rogue-ca", rogue_key, _cert("rogue CA", rogue_key, "rogue CA", rogue_key, ca=True))
        for name, issuer, issuer_key, server in (("server", "kgverify test CA", ca_key, True),
                                                 ("client", "kgverify test CA", ca_key, False),
                                                 ("rogue-client", "rogue CA", rogue_key, False)):
            key = ec.generate_private_key(ec.SECP256R1())
            self._write(name, key, _cert(name, key, issuer, issuer_key, server=server))

    def _write(self, name, key, cert):
        (self.root / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (self.root / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def path(self, name):
        return self.root / name

    def credentials(self, ca="ca", client=None):
        key = self.path(f"{client}.key").read_bytes() if client else None
        chain = self.path(f"{client}.pem").read_bytes() if client else None
        return grpc.ssl_channel_credentials(self.path(f"{ca}.pem").read_bytes(), key, chain)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def secure_server(cache_dir, monkeypatch, tmp_path):
    """Starts a server (no KB, fake backends) with the given security settings."""
    monkeypatch.setitem(registry.JUDGES, "nli", lambda ctx: FakeJudge())
    monkeypatch.setitem(registry.ESTIMATORS, "nli", lambda ctx: FakeEstimator())
    servers = []

    async def start(**security):
        sock = tmp_path / f"kgv{len(servers)}.sock"
        settings = make_settings(cache_dir, kb={"enabled": False}, security=security)
        server = await start_server(settings, ["127.0.0.1:0", f"unix://{sock}"])
        servers.append(server)
        await server.wait_ready(300)
        return server

    yield start
    for server in servers:
        await server.stop(0)


async def _score(address, **client_options):
    async with AsyncVerifierClient(address, retries=0, timeout_s=10, **client_options) as client:
        return await client.score_chain(metrics=("ki",), **CHAIN)


async def _refused(address, **client_options):
    with pytest.raises(VerifierError) as info:
        await _score(address, **client_options)
    return info.value


async def test_tls_serves_only_clients_that_trust_its_certificate(secure_server, pki):
    server = await secure_server(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"))
    tcp, unix = server.addresses
    assert (await _score(tcp, credentials=pki.credentials())).knowledge_index == 1.0
    assert (await _refused(tcp)).code == "UNAVAILABLE"  # plaintext client: no TLS handshake
    assert (await _refused(tcp, credentials=pki.credentials(ca="rogue-ca"))).code == "UNAVAILABLE"
    assert (await _score(unix)).knowledge_index == 1.0  # the unix socket stays plaintext (file permissions guard it)
    ca = str(pki.path("ca.pem"))
    assert await asyncio.to_thread(healthcheck, ["--address", tcp, "--tls-ca", ca]) == 0
    assert await asyncio.to_thread(healthcheck, ["--address", tcp, "--timeout", "1"]) == 1
    assert await asyncio.to_thread(healthcheck, ["--address", unix]) == 0


async def test_mtls_refuses_clients_without_a_certificate_from_its_ca(secure_server, pki):
    server = await secure_server(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"),
                                 tls_client_ca_file=pki.path("ca.pem"), require_client_auth=True)
    tcp = server.addresses[0]
    assert (await _score(tcp, credentials=pki.credentials(client="client"))).knowledge_index == 1.0
    assert (await _refused(tcp, credentials=pki.credentials())).code == "UNAVAILABLE"
    assert (await _refused(tcp, credentials=pki.credentials(client="rogue-client"))).code == "UNAVAILABLE"


async def test_token_auth_refuses_missing_and_wrong_tokens_but_never_health(secure_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# accepted tokens\nsecond-token\n")
    server = await secure_server(auth_tokens=[TOKEN], auth_tokens_file=token_file)
    address = server.addresses[0]
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        error = await _refused(address, metadata=metadata)
        assert error.code == "UNAUTHENTICATED" and error.reason == "UNAUTHENTICATED"
    for token in (TOKEN, "second-token"):
        assert (await _score(address, metadata=(("authorization", f"Bearer {token}"),))).knowledge_index == 1.0
    async with AsyncVerifierClient(address, retries=0) as client:
        assert await client.health() == "SERVING"  # health is exempt
        with pytest.raises(VerifierError) as info:
            await client.kb_info()
        assert info.value.code == "UNAUTHENTICATED"

        async def items():
            yield "x", __import__("client.requests", fromlist=["chain_request"]).chain_request(CHAIN, ("ki",))

        with pytest.raises(VerifierError) as info:
            [r async for r in client.stream_chains(items())]
        assert info.value.code == "UNAUTHENTICATED"


async def test_admin_tokens_guard_reloads_and_only_reloads(secure_server, tmp_path, capsys):
    from kb import cli as kb_cli

    admin_file = tmp_path / "admin-tokens"
    admin_file.write_text("operator-token\n")
    server = await secure_server(auth_tokens=[TOKEN], admin_tokens=["admin-token"], admin_tokens_file=admin_file)
    address = server.addresses[0]

    async def reload(token):
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        async with AsyncVerifierClient(address, retries=0, timeout_s=10, metadata=metadata) as client:
            with pytest.raises(VerifierError) as info:
                await client.reload_kb()
            return info.value

    for token in ("admin-token", "operator-token", TOKEN):  # admin tokens are good for the service too
        assert (await _score(address, metadata=(("authorization", f"Bearer {token}"),))).knowledge_index == 1.0
    refused = await reload(TOKEN)
    assert refused.code == "PERMISSION_DENIED" and refused.reason == "ADMIN_TOKEN_REQUIRED"
    assert "ReloadKnowledgeBase" in refused.message
    assert (await reload(None)).code == (await reload("wrong")).code == "UNAUTHENTICATED"
    for token in ("admin-token", "operator-token"):  # let through: this server has no KB to reload
        assert (await reload(token)).reason == "KB_NOT_LOADED"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    assert await asyncio.to_thread(kb_cli.main, ["reload", "--server", address, "--token-file", str(token_file)]) == 2
    assert "ADMIN_TOKEN_REQUIRED" in capsys.readouterr().err

    open_server = await secure_server(admin_tokens=["admin-token"])  # admin tokens only: the service stays open
    address = open_server.addresses[0]
    assert (await _score(address)).knowledge_index == 1.0
    assert (await reload(None)).code == "UNAUTHENTICATED"
    assert (await reload("admin-token")).reason == "KB_NOT_LOADED"


async def test_batch_reaches_a_tls_server_with_a_token(secure_server, pki, tmp_path):
    server = await secure_server(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"),
                                 auth_tokens=[TOKEN])
    source, out, token_file = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "token"
    source.write_text(json.dumps({"id": "a", **CHAIN}) + "\n")
    token_file.write_text(f"# the verifier's token (the server's token-file format)\n\n  {TOKEN}\n")  # (was sent whole)
    args = ["batch", "--no-progress", "--input", str(source), "--output", str(out), "--metrics", "ki",
            "--server", server.addresses[0], "--tls-ca", str(pki.path("ca.pem")), "--token-file", str(token_file)]
    assert await asyncio.to_thread(main, args) == 0
    assert json.loads(out.read_text())["status"] == "ok"


def test_inconsistent_security_settings_are_refused_at_startup(pki):
    with pytest.raises(ValidationError, match="both tls_cert_file and tls_key_file"):
        SecuritySettings(tls_cert_file=pki.path("server.pem"))
    with pytest.raises(ValidationError, match="needs tls_client_ca_file"):
        SecuritySettings(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"),
                         require_client_auth=True)
    with pytest.raises(ValidationError, match="needs tls_cert_file"):
        SecuritySettings(tls_client_ca_file=pki.path("ca.pem"))
    # a client CA without require_client_auth: gRPC asks no client for a certificate, so it checked nobody
    with pytest.raises(ValidationError, match="only with require_client_auth=true"):
        SecuritySettings(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"),
                         tls_client_ca_file=pki.path("ca.pem"))


@pytest.mark.parametrize("text, error", [
    ("", "holds no token"), ("# only a comment\n\n", "holds no token"),
    ("token-one\ntoken-two\n", r"holds 2 tokens \(lines 1, 2\): a client sends one"),
    ("tök\n", "line 1 of .* printable ASCII"),
])
def test_a_client_token_file_that_cannot_give_one_token_is_a_clear_error(tmp_path, text, error):
    from client.security import read_token_file

    path = tmp_path / "token"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=error) as info:
        read_token_file(path)
    assert "token-one" not in str(info.value) and "tök" not in str(info.value)  # never the secret itself
    path.write_bytes("\ufeff# comment\r\n  s3cret \r\n".encode("utf-8"))
    assert read_token_file(path) == "s3cret"


def test_an_expired_server_certificate_stops_the_start_and_one_about_to_expire_is_a_warning(pki, monkeypatch,
                                                                                              caplog):
    """An expired certificate was served without a word: every TLS client failed its handshake while the unix
    listener's health probe kept the container healthy."""
    from server import security
    from server.security import SecurityConfigError, server_credentials

    cfg = SecuritySettings(tls_cert_file=pki.path("server.pem"), tls_key_file=pki.path("server.key"))
    now = datetime.datetime.now(datetime.timezone.utc).timestamp()
    monkeypatch.setattr(security.time, "time", lambda: now + 3 * 86400)  # the test certificates last a day
    with pytest.raises(SecurityConfigError, match="KGV_SECURITY__TLS_CERT_FILE: the certificate .* expired on"):
        server_credentials(cfg)
    monkeypatch.setattr(security.time, "time", lambda: now)
    with caplog.at_level(logging.WARNING, logger="kgverify.security"):
        assert server_credentials(cfg) is not None
    assert "expires on" in caplog.text and "renew it" in caplog.text
    caplog.clear()
    monkeypatch.setattr(security.time, "time", lambda: now - 86400)
    with caplog.at_level(logging.WARNING, logger="kgverify.security"):
        assert server_credentials(cfg) is not None
    assert "is not valid before" in caplog.text
