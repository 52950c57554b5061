"""The sandbox's APNs: HTTP/2 over TLS (hypercorn serving a small ASGI app), provider tokens checked.

At start the sandbox makes, once, under ``HERALD_HOME/sandbox/apns`` (never in
the repository): an ES256 signing key (``AuthKey_<key id>.p8``, what Apple
hands a developer), a CA and a server certificate for 127.0.0.1 / localhost
signed by it. Herald's APNs sink signs its JWTs with that key and trusts that
CA; the sandbox checks each JWT's signature against the key's public half, its
``kid`` and its age (older than an hour: ``403 ExpiredProviderToken``).

Faults, beside the shared ones (``storm`` → 503, ``rate_limit`` → 429
``TooManyRequests``, ``error_rate``/``error_status`` → 500...):
``unregistered_tokens`` → ``410 Unregistered`` with its timestamp,
``bad_tokens`` → ``400 BadDeviceToken``, ``expired_provider_token: N`` → the
next N requests ``403 ExpiredProviderToken``.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.tools.sandbox.state import SandboxState, new_id
from sinks.apns import MAX_PAYLOAD_BYTES, TOKEN_LIFETIME

_PATH = re.compile(r"^/3/device/([^/]+)$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_REASON_STATUS = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class ApnsMaterial:
    key_file: Path     # the .p8 signing key (PKCS#8 PEM)
    ca_file: Path
    cert_file: Path
    server_key_file: Path


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def ensure_material(folder: Path, key_id: str) -> ApnsMaterial:
    """The signing key, CA and server certificate in ``folder``, made once (a file lock serialises sandboxes)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = ApnsMaterial(folder / f"AuthKey_{key_id}.p8", folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not m.key_file.exists():
            _write(m.key_file, _pem_key(ec.generate_private_key(ec.SECP256R1())))
        if not (m.ca_file.exists() and m.cert_file.exists() and m.server_key_file.exists()):
            _make_certificates(m)
    return m


def _make_certificates(m: ApnsMaterial) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald sandbox CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.sandbox.push.apple.com")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("api.sandbox.push.apple.com"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(m.server_key_file, _pem_key(key))
    _write(m.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write(m.ca_file, ca.public_bytes(serialization.Encoding.PEM))


# --- the ASGI app --------------------------------------------------------------------
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ApnsApp:
    def __init__(self, state: SandboxState, public_key: Any, key_id: str, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.public_key = public_key
        self.key_id = key_id
        self.clock = clock
        self.in_flight = 0
        self.peak = 0                                # most requests in flight at once (streams, over all connections)
        self.clients: set[tuple[str, int]] = set()   # client (host, port) pairs seen: one per TCP connection

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope.get("client"):
            self.clients.add(tuple(scope["client"]))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            status, reply_headers, reply = await self.handle(scope["method"], scope["path"], headers, body,
                                                             scope.get("http_version", ""))
        finally:
            self.in_flight -= 1
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in reply_headers.items()]})
        await send({"type": "http.response.body", "body": reply})

    async def handle(self, method: str, path: str, headers: dict[str, str], body: bytes,
                     http_version: str = "2") -> tuple[int, dict[str, str], bytes]:
        apns_id = headers.get("apns-id") or str(new_id())
        out = {"apns-id": apns_id}

        def error(status: int, reason: str, **extra: Any) -> tuple[int, dict[str, str], bytes]:
            return status, {**out, "content-type": "application/json"}, json.dumps({"reason": reason, **extra}).encode()

        m = _PATH.match(path)
        if m is None:
            return error(404, "BadPath")
        if method != "POST":
            return error(405, "MethodNotAllowed")
        if http_version != "2":
            return error(400, "BadRequest", detail="APNs speaks HTTP/2 only")
        token = m.group(1)
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return error(403, "MissingProviderToken")
        claims = self._check_jwt(auth[7:].strip())
        if isinstance(claims, str):
            return error(403, claims)
        if not headers.get("apns-topic"):
            return error(400, "MissingTopic")
        if headers.get("apns-push-type", "alert") not in ("alert", "background", "voip", "complication", "fileprovider",
                                                          "mdm", "location", "liveactivity", "pushtotalk", "widgets"):
            return error(400, "InvalidPushType")
        if headers.get("apns-priority", "10") not in ("10", "5", "1"):
            return error(400, "BadPriority")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return error(400, "BadCollapseId")
        verdict = await self.state.enter("apns", [token])
        if verdict.status:
            extra = {"retry-after": f"{verdict.retry_after:g}"} if verdict.retry_after is not None else {}
            status, hdrs, reply = error(verdict.status, _REASON_STATUS.get(verdict.status, "InternalServerError"))
            return status, {**hdrs, **extra}, reply
        faults = self.state.faults["apns"]
        if faults.expired_provider_token:
            if faults.expired_provider_token > 0:
                faults.expired_provider_token -= 1
            return error(403, "ExpiredProviderToken")
        if token in faults.unregistered_tokens:
            return error(410, "Unregistered", timestamp=int(self.clock() * 1000) - 3_600_000)
        if not _HEX64.match(token) or token in faults.bad_tokens:
            return error(400, "BadDeviceToken")
        if len(body) > MAX_PAYLOAD_BYTES:
            return error(413, "PayloadTooLarge")
        try:
            payload = json.loads(body)
            alert = payload["aps"]["alert"]
        except (ValueError, KeyError, TypeError):
            return error(400, "PayloadEmpty")
        data = {k: v for k, v in payload.items() if k != "aps"}
        self.state.record("apns", {
            "to": token, "title": alert.get("title") if isinstance(alert, dict) else None,
            "text": alert.get("body") if isinstance(alert, dict) else alert, "data": data, "message_id": apns_id,
            "delivery_id": data.get("delivery_id"), "topic": headers.get("apns-topic"),
            "push_type": headers.get("apns-push-type"), "priority": headers.get("apns-priority"),
            "expiration": headers.get("apns-expiration"), "collapse_id": headers.get("apns-collapse-id"),
            "jwt_iat": claims.get("iat"), "team_id": claims.get("iss"),
        })
        return 200, out, b""

    def _check_jwt(self, token: str) -> dict[str, Any] | str:
        """The claims, or the APNs reason for refusing the token."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != "ES256" or header.get("kid") != self.key_id:
                return "InvalidProviderToken"
            claims = jwt.decode(token, self.public_key, algorithms=["ES256"], options={"verify_iat": False})
        except jwt.PyJWTError:
            return "InvalidProviderToken"
        if not claims.get("iss") or not isinstance(claims.get("iat"), int):
            return "InvalidProviderToken"
        if self.clock() - claims["iat"] > TOKEN_LIFETIME:
            return "ExpiredProviderToken"
        return claims


class ApnsServer:
    """hypercorn on the sandbox's event loop, HTTP/2 over TLS (ALPN h2), on ``host:port``."""

    def __init__(self, state: SandboxState, host: str, port: int, folder: Path, key_id: str,
                 key_file: Path | None = None) -> None:
        self.state, self.host, self.port, self.folder, self.key_id = state, host, port, folder, key_id
        self.key_file = key_file
        self.app: ApnsApp | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        material = await asyncio.to_thread(ensure_material, self.folder, self.key_id)
        key_file = self.key_file or material.key_file
        private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        cfg = Config()
        cfg.bind = [f"{self.host}:{self.port}"]
        cfg.certfile, cfg.keyfile = str(material.cert_file), str(material.server_key_file)
        cfg.alpn_protocols = ["h2"]
        cfg.h2_max_concurrent_streams = 100     # APNs' figure (the seeds'): 100 notifications in flight per connection
        cfg.accesslog = None
        cfg.errorlog = None
        cfg.graceful_timeout = 1.0
        cfg.keep_alive_timeout = 3600
        cfg.keep_alive_max_requests = 2**31   # APNs keeps a connection for hours; hypercorn would close it after 1000
        self._stop = asyncio.Event()
        self.app = app = ApnsApp(self.state, private.public_key(), self.key_id)
        self._task = asyncio.create_task(serve(app, cfg, mode="asgi", shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        for _ in range(200):
            if self._task.done():
                self._task.result()   # raises what stopped it (the port taken...)
                raise RuntimeError("the APNs sandbox stopped at start")
            try:
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the APNs sandbox does not listen on {self.host}:{self.port}")

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
