"""APNs sink: Apple's provider API over HTTP/2, with token-based (JWT) authentication.

One ``httpx.AsyncClient(http2=True)`` holds one connection to APNs and sends
each notification as its own HTTP/2 stream (``POST /3/device/<token>``), at
most ``max_in_flight`` (100, Apple's figure) at a time. The provider token is
an ES256 JWT signed with the ``.p8`` key (``kid`` header, ``iss`` team id,
``iat``), cached and renewed at ``refresh_after`` seconds (50 minutes; Apple
refuses a token older than an hour and one renewed more often than every 20
minutes). A ``403 ExpiredProviderToken`` renews the token and sends that one
notification again, once.

Answers map onto ``sinks.errors`` here and nowhere else (``map_response``):
410 ``Unregistered`` and 400 ``BadDeviceToken`` → ``InvalidToken`` (the
device is deactivated at once), 429 → ``RateLimited``, 5xx and connection
errors → ``Retryable``, any other 4xx → ``Permanent``.

The key and the client are made on first use, so a worker starts even before
the sandbox has generated its key, and one without iOS devices never reads it.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from schemas.records import Delivery
from schemas.vocabulary import Channel, Lane
from sinks.base import Result, Sent, parse_retry_after
from sinks.content import check_body, check_header
from sinks.errors import DeliveryError, InvalidAddress, InvalidToken, Permanent, RateLimited, Retryable

MAX_PAYLOAD_BYTES = 4096        # Apple's limit for a regular remote notification
MAX_COLLAPSE_ID_BYTES = 64
TOKEN_LIFETIME = 3600           # Apple refuses a provider token older than this
HEX = frozenset("0123456789abcdefABCDEF")


def is_apns_token(token: str) -> bool:
    """An APNs device token is 32 bytes, written as 64 hex characters; FCM tokens are longer and never all hex."""
    return len(token) == 64 and all(c in HEX for c in token)


def sandbox_dir(home: Path) -> Path:
    """Where the sandbox keeps its APNs signing key, CA and server certificate (never in the repository)."""
    return home / "sandbox" / "apns"


def sandbox_key_file(home: Path, key_id: str) -> Path:
    return sandbox_dir(home) / f"AuthKey_{key_id}.p8"


def sandbox_ca_file(home: Path) -> Path:
    return sandbox_dir(home) / "ca.pem"


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the provider token ----------------------------------------------------------------
class ProviderToken:
    """The ES256 JWT APNs wants in ``authorization: bearer``; made again when ``refresh_after`` seconds old."""

    def __init__(self, key_pem: str | bytes, key_id: str, team_id: str, refresh_after: float = 3000.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 < refresh_after < TOKEN_LIFETIME:
            raise ValueError(f"refresh_after must be below Apple's {TOKEN_LIFETIME} s")
        self._key = key_pem
        self.key_id = key_id
        self.team_id = team_id
        self.refresh_after = refresh_after
        self._clock = clock
        self._token: str | None = None
        self._issued_at = 0.0
        self.issued = 0     # tokens made so far (tests, metrics)

    def current(self) -> str:
        now = self._clock()
        if self._token is None or now - self._issued_at >= self.refresh_after:
            self._make(now)
        assert self._token is not None
        return self._token

    def renew(self, stale: str) -> str:
        """After APNs called ``stale`` expired: a new token, unless another request renewed it already."""
        if self._token == stale:
            self._make(self._clock())
        return self.current()

    def _make(self, now: float) -> None:
        iat = int(now)
        if self._token is not None and iat <= self._issued_at:
            iat = int(self._issued_at) + 1   # a renewal within the same second must still be a new token
        self._token = jwt.encode({"iss": self.team_id, "iat": iat}, self._key, algorithm="ES256",
                                 headers={"kid": self.key_id})
        self._issued_at = float(iat)
        self.issued += 1


# --- one request ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApnsRequest:
    path: str
    headers: dict[str, str]
    body: bytes


def expiration(d: Delivery) -> str:
    """``apns-expiration``: the route's time-to-live as epoch seconds; "0" (try once, do not store) without one."""
    if d.expires_at is None:
        return "0"
    ms = d.expires_at if isinstance(d.expires_at, int) else int(d.expires_at.timestamp() * 1000)
    return str(max(1, ms // 1000))


def collapse_id(d: Delivery) -> str:
    """``apns-collapse-id``: the route's ``collapse_id`` push datum, else the notification id, so a notification
    shown twice (a resend after a crash) replaces itself on the device. At most 64 bytes."""
    value = (d.push_data or {}).get("collapse_id") or d.notification_id
    raw = value.encode()[:MAX_COLLAPSE_ID_BYTES]
    return raw.decode(errors="ignore")


def build_request(d: Delivery, topic: str) -> ApnsRequest:
    """The path, headers (without ``authorization``) and JSON payload of one delivery; raises ``Permanent`` /
    ``InvalidAddress`` for what it cannot carry."""
    if not is_apns_token(d.address or ""):
        raise InvalidAddress(f"invalid APNs device token {d.address[:80]!r}: expected 64 hex characters")
    check_header("push title", d.push_title)
    check_body("text", d.text)
    data: dict[str, Any] = {k: v for k, v in (d.push_data or {}).items() if k != "collapse_id"}
    if "aps" in data:
        raise Permanent("push data key 'aps' is reserved by APNs")
    alert: dict[str, str] = {"body": d.text}
    if d.push_title:
        alert["title"] = d.push_title
    payload = {"aps": {"alert": alert}, **data, "delivery_id": d.delivery_id}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    if len(body) > MAX_PAYLOAD_BYTES:
        raise Permanent(f"push payload is {len(body)} bytes, more than APNs' {MAX_PAYLOAD_BYTES}")
    headers = {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-priority": "5" if d.lane == Lane.BULK else "10",   # campaigns: power-considerate; the rest at once
        "apns-expiration": expiration(d),
        "apns-collapse-id": collapse_id(d),
        "apns-id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"herald:{d.delivery_id}")),
        "content-type": "application/json",
    }
    return ApnsRequest(f"/3/device/{d.address.lower()}", headers, body)


# --- answers → the taxonomy -------------------------------------------------------------
class ExpiredToken(Exception):
    """403 ExpiredProviderToken: renew the JWT and send again (inside the sink only)."""


_INVALID_TOKEN = {"BadDeviceToken", "Unregistered"}


def map_response(status: int, reason: str | None, headers: dict[str, str] | httpx.Headers | None = None,
                 timestamp: int | None = None) -> DeliveryError | ExpiredToken:
    """One APNs error answer → Herald's taxonomy (``ExpiredToken``: the sink renews and retries once)."""
    what = f"apns {status} {reason or 'no reason'}"
    if status == 410 or reason in _INVALID_TOKEN:
        if timestamp:
            what += f" (token invalid since {datetime.fromtimestamp(timestamp / 1000, UTC).isoformat(timespec='seconds')})"
        return InvalidToken(what)
    if status == 403 and reason == "ExpiredProviderToken":
        return ExpiredToken(what)
    if status == 429:
        return RateLimited(what, parse_retry_after((headers or {}).get("retry-after")))
    if status >= 500:
        return Retryable(what)
    return Permanent(what)


def _reason(resp: httpx.Response) -> tuple[str | None, int | None]:
    try:
        body = resp.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    ts = body.get("timestamp")
    return body.get("reason"), ts if isinstance(ts, int) else None


# --- the sink ----------------------------------------------------------------------
class ApnsSink:
    provider = "apns"
    channel = Channel.PUSH
    max_batch = 1000

    def __init__(self, base_url: str, key_id: str, team_id: str, topic: str, *,
                 key_pem: str | None = None, key_file: Path | None = None, ca_file: Path | None = None,
                 max_in_flight: int = 100, timeout: float = 15.0, refresh_after: float = 3000.0,
                 clock: Callable[[], float] = time.time) -> None:
        if key_pem is None and key_file is None:
            raise ValueError("an APNs sink needs the .p8 key (key_pem or key_file)")
        self.base_url = base_url.rstrip("/")
        self.topic = topic
        self.max_in_flight = max_in_flight
        self._key_id, self._team_id = key_id, team_id
        self._key_pem, self._key_file, self._ca_file = key_pem, key_file, ca_file
        self._timeout, self._refresh_after, self._clock = timeout, refresh_after, clock
        self._token: ProviderToken | None = None
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(max_in_flight)

    @property
    def token(self) -> ProviderToken:
        if self._token is None:
            pem = self._key_pem if self._key_pem is not None else Path(self._key_file or "").read_text()
            self._token = ProviderToken(pem, self._key_id, self._team_id, self._refresh_after, self._clock)
        return self._token

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: ssl.SSLContext | bool = True
            if self._ca_file is not None:
                verify = ssl.create_default_context(cafile=str(self._ca_file))
            # one connection, many streams: APNs wants few connections kept open
            self._client = httpx.AsyncClient(
                base_url=self.base_url, http2=True, verify=verify, timeout=self._timeout, trust_env=False,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
        return self._client

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        try:
            self.token.current()
            self._http()
        except (OSError, ValueError, TypeError, ssl.SSLError) as exc:  # key or CA missing / unreadable: config, not content
            return [Retryable(f"apns: cannot sign or connect: {exc}") for _ in deliveries]
        return list(await asyncio.gather(*(self._send_one(d) for d in deliveries)))

    async def _send_one(self, d: Delivery) -> Result:
        try:
            req = build_request(d, self.topic)
        except DeliveryError as err:
            return err
        async with self._slots:
            token = self.token.current()
            result = await self._post(req, token)
            if isinstance(result, ExpiredToken):
                result = await self._post(req, self.token.renew(token))
                if isinstance(result, ExpiredToken):
                    return Retryable(f"{result} again after a new provider token")
            return result

    async def _post(self, req: ApnsRequest, token: str) -> Result | ExpiredToken:
        try:
            resp = await self._http().post(req.path, content=req.body,
                                           headers={**req.headers, "authorization": f"bearer {token}"})
        except httpx.HTTPError as exc:
            return Retryable(f"apns: {type(exc).__name__}: {exc}")
        except OSError as exc:
            return Retryable(f"apns: {exc}")
        if resp.status_code == 200:
            return Sent(resp.headers.get("apns-id") or req.headers["apns-id"])
        reason, ts = _reason(resp)
        return map_response(resp.status_code, reason, resp.headers, ts)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
