"""TLS / mTLS server credentials and the bearer-token auth interceptor (health checks are exempt).

Two kinds of tokens: `auth_tokens` let a caller use the service; `admin_tokens` also let it call the admin
RPCs (ADMIN_METHODS: reloading the KB loads files and holds two KBs in memory for a while, so an ordinary
caller of a shared sidecar should not be able to trigger it). Without admin tokens, whoever may call the
service may reload; with admin tokens but no auth tokens, the service stays open and only reloads need one.
"""

from __future__ import annotations

import codecs
import hashlib
import hmac
import logging
import os
import stat
import time
from pathlib import Path

import grpc

from .config import SecuritySettings, SettingsError
from .context import new_request_id, request_id_var
from .errors import grpc_status
from .pipeline.errors import KgverifyError

log = logging.getLogger("kgverify.security")
# Orchestrators probe health without credentials; health answers carry no data.
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/",)
ADMIN_METHODS = frozenset({"/kgverify.v1.KnowledgeBaseService/ReloadKnowledgeBase"})


class UnauthenticatedError(KgverifyError):
    """The call carries no bearer token, or one this server does not accept."""

    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDeniedError(KgverifyError):
    """The caller's token is accepted but does not allow this RPC."""

    code = "PERMISSION_DENIED"
    reason = "ADMIN_TOKEN_REQUIRED"


class SecurityConfigError(SettingsError):
    """A configured certificate, key or token file cannot be used (a SettingsError: `python -m server` and
    `kgverify serve` print it in one line and exit 2, naming the variable)."""


def _read(path: Path, what: str, variable: str) -> bytes:
    try:
        data = Path(path).read_bytes()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise SecurityConfigError(f"{variable}: cannot read the {what} {path}: {exc.strerror or exc}") from None
    if mode & stat.S_IWOTH:
        # Anyone on the machine could add a token, add a CA that lets their certificates in, or swap the key.
        # Readable by all is left alone: container runtimes mount secrets 0444 or 0644 by default.
        log.warning("%s: the %s %s can be written by every user of this machine (mode %s): chmod o-w it",
                    variable, what, path, stat.filemode(mode))
    return data


def _check_pem(cfg: SecuritySettings) -> None:
    """Loads the certificate, key and client CA with the ssl module, so that a file that is not PEM, or a key that
    does not match the certificate, stops the start naming the variable (gRPC only logged "Invalid cert chain
    file" and failed to bind, which read as "the address is in use")."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # password: an encrypted key is refused here rather than prompted for on the terminal (gRPC cannot use one)
        context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file, password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        raise SecurityConfigError(
            f"KGV_SECURITY__TLS_CERT_FILE / KGV_SECURITY__TLS_KEY_FILE: {cfg.tls_cert_file} and {cfg.tls_key_file} "
            f"are not a PEM certificate chain and its unencrypted private key ({exc})") from None
    _check_validity(cfg.tls_cert_file)
    if cfg.tls_client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=cfg.tls_client_ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise SecurityConfigError(f"KGV_SECURITY__TLS_CLIENT_CA_FILE: {cfg.tls_client_ca_file} is not a PEM "
                                      f"CA bundle ({exc})") from None


EXPIRY_WARNING_S = 14 * 86400


def _check_validity(cert_file: Path, now: float | None = None) -> None:
    """An expired server certificate stops the start (every TLS client would refuse the handshake while the unix
    listener's health probe said SERVING); one not valid yet, or expiring within 14 days, is a warning. Read with the
    ssl module's certificate decoder (the first certificate of the chain: the server's own); skipped where this
    Python has none."""
    import ssl

    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return
    try:
        info = decode(str(cert_file))
        not_before = ssl.cert_time_to_seconds(info["notBefore"])
        not_after = ssl.cert_time_to_seconds(info["notAfter"])
    except (ssl.SSLError, OSError, KeyError, ValueError):
        return  # (load_cert_chain has read it: nothing more to say)
    now = time.time() if now is None else now
    if not_after < now:
        raise SecurityConfigError(f"KGV_SECURITY__TLS_CERT_FILE: the certificate {cert_file} expired on "
                                  f"{info['notAfter']}: every TLS client would refuse it; renew it")
    if not_before > now:
        log.warning("KGV_SECURITY__TLS_CERT_FILE: the certificate %s is not valid before %s: TLS clients refuse it "
                    "until then", cert_file, info["notBefore"])
    elif not_after - now < EXPIRY_WARNING_S:
        log.warning("KGV_SECURITY__TLS_CERT_FILE: the certificate %s expires on %s: renew it (the server reads it "
                    "when it starts)", cert_file, info["notAfter"])


def server_credentials(cfg: SecuritySettings) -> grpc.ServerCredentials | None:
    """TLS credentials for TCP listeners (mTLS when a client CA is set), or None to serve plaintext."""
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    key = _read(cfg.tls_key_file, "TLS key", "KGV_SECURITY__TLS_KEY_FILE")
    chain = _read(cfg.tls_cert_file, "TLS certificate", "KGV_SECURITY__TLS_CERT_FILE")
    client_ca = _read(cfg.tls_client_ca_file, "client CA", "KGV_SECURITY__TLS_CLIENT_CA_FILE") \
        if cfg.tls_client_ca_file else None
    _check_pem(cfg)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=cfg.require_client_auth)


def _digests(tokens: list, path: Path | None, what: str, variable: str) -> list[bytes]:
    """sha256 digests of the tokens and of the file's lines (the tokens themselves are not kept)."""
    tokens = [t.get_secret_value().strip() for t in tokens]
    if any(not t for t in tokens):
        raise SecurityConfigError(f"{variable}: an empty auth token would accept every caller")
    if any(not _sendable(t) for t in tokens):
        raise SecurityConfigError(f"{variable}: a token holds characters other than printable ASCII, which gRPC "
                                  "metadata cannot carry: no client could send it")
    if path is not None:
        data = _read(path, what, f"{variable}_FILE")
        data = data.removeprefix(codecs.BOM_UTF8)  # written by Windows tools: not part of the first token
        try:
            text = data.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:  # the message names the file and line, never the bytes (a secret)
            line = data[:exc.start].count(b"\n") + 1
            raise SecurityConfigError(f"{variable}_FILE: line {line} of the {what} {path} is not UTF-8 text") \
                from None
        configured = len(tokens)
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _sendable(line):
                raise SecurityConfigError(f"{variable}_FILE: line {number} of the {what} {path} holds characters "
                                          "other than printable ASCII, which gRPC metadata cannot carry: no "
                                          "client could send that token")
            tokens.append(line)
        if len(tokens) == configured == 0:
            # Without this, an empty mounted secret turned the token check off (or, for admin tokens, let every
            # caller with an ordinary token reload) without a word.
            raise SecurityConfigError(f"{variable}_FILE: the {what} {path} holds no token (one a line, # starts a "
                                      "comment); serving without the tokens it should hold would let in callers "
                                      "it was set to keep out")
    return [hashlib.sha256(t.encode()).digest() for t in tokens]


def _sendable(token: str) -> bool:
    """Can a client send it? gRPC metadata values are printable ASCII (spaces included)."""
    return token.isascii() and token.isprintable()


def load_tokens(cfg: SecuritySettings) -> list[bytes]:
    """sha256 digests of the accepted (non-admin) tokens."""
    return _digests(cfg.auth_tokens, cfg.auth_tokens_file, "token file", "KGV_SECURITY__AUTH_TOKENS")


def load_admin_tokens(cfg: SecuritySettings) -> list[bytes]:
    """sha256 digests of the admin tokens."""
    return _digests(cfg.admin_tokens, cfg.admin_tokens_file, "admin token file", "KGV_SECURITY__ADMIN_TOKENS")


def _bearer(metadata) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


class RefusalLog:
    """WARNING lines for refused calls without a flood: the first refusal of each method and reason is logged at
    once; the next ones within `interval_s` only at DEBUG, counted, and the count reported with the next WARNING
    (a client retrying with a wrong token, or a scanner, would otherwise write a warning per call; every call is
    still in the access log and the metrics)."""

    def __init__(self, interval_s: float = 60.0, clock=time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (method, reason) -> (last warning, held back)

    def refused(self, method: str, refusal: KgverifyError) -> None:
        key, now = (method, refusal.reason), self._clock()
        last, held = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.interval_s:
            self._seen[key] = (last, held + 1)
            log.debug("refused %s: %s", method, refusal.message)
            return
        self._seen[key] = (now, 0)
        more = f" ({held} more refused like it in the last {now - last:.0f} s)" if held else ""
        log.warning("refused %s: %s%s", method, refusal.message, more)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without an accepted `authorization: Bearer <token>` with UNAUTHENTICATED, and admin RPCs
    with an accepted non-admin token with PERMISSION_DENIED (ADMIN_TOKEN_REQUIRED)."""

    def __init__(self, digests: list[bytes], admin_digests: list[bytes] = ()):
        self._digests = list(digests)
        self._admin = list(admin_digests)
        self._refusals = RefusalLog()

    @staticmethod
    def _matches(token: str | None, digests: list[bytes]) -> bool:
        if not token or not digests:
            return False
        digest = hashlib.sha256(token.encode()).digest()
        # Compare against every token so the time taken does not say which one came close.
        return sum(hmac.compare_digest(digest, known) for known in digests) > 0

    def accepts(self, token: str | None) -> bool:
        return self._matches(token, self._digests) or self._matches(token, self._admin)

    def refusal(self, method: str, token: str | None) -> KgverifyError | None:
        """Why the call is refused, or None to let it through."""
        if method.startswith(EXEMPT_PREFIXES):
            return None
        if method in ADMIN_METHODS and self._admin:
            if self._matches(token, self._admin):
                return None
            if self._matches(token, self._digests):
                return PermissionDeniedError(f"{method.rsplit('/', 1)[-1]} needs an admin token")
            return UnauthenticatedError("missing or unknown bearer token")
        if not self._digests or self.accepts(token):  # admin tokens only: the service itself stays open
            return None
        return UnauthenticatedError("missing or unknown bearer token")

    async def intercept_service(self, continuation, details):
        refusal = self.refusal(details.method, _bearer(details.invocation_metadata))
        if refusal is None:
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None
        # The call's request id (the client's x-request-id, else a new one), as every other error carries it: in
        # the status the client gets and on the log lines, so a refusal a client reports can be found in the log.
        request_id = new_request_id(details.invocation_metadata)
        token = request_id_var.set(request_id)
        try:
            log.info("%s %s (%s)", details.method, refusal.code, refusal.reason)  # the access log line of the call
            self._refusals.refused(details.method, refusal)  # (only registered methods reach here: bounded keys)
        finally:
            request_id_var.reset(token)
        status = grpc_status(refusal, request_id)

        async def deny(request_or_iterator, context):
            await context.abort_with_status(status)

        async def deny_stream(request_or_iterator, context):
            await context.abort_with_status(status)
            yield  # pragma: no cover - makes this an async generator, as streaming handlers must be

        serializers = {"request_deserializer": handler.request_deserializer,
                       "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(deny, **serializers)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(deny, **serializers)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(deny_stream, **serializers)
        return grpc.stream_stream_rpc_method_handler(deny_stream, **serializers)


def auth_interceptor(cfg: SecuritySettings) -> TokenAuthInterceptor | None:
    """The auth interceptor when tokens are configured, else None (no token auth)."""
    digests, admin = load_tokens(cfg), load_admin_tokens(cfg)
    return TokenAuthInterceptor(digests, admin) if digests or admin else None
