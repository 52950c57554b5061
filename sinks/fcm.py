"""FCM sink: the real ``firebase-admin`` SDK (``send_each_async``, up to 500 messages a call).

Pointing it at the sandbox: the service-account JSON is public configuration
(its ``token_uri`` names the OAuth endpoint; without a file we generate one
with a fresh RSA key). The send URL has no public override in firebase-admin
7.x, so ``_point_at`` sets the private attributes of the messaging service —
the only place in Herald that touches them. It also replaces the SDK's own
retrying HTTP client (4 retries on 500/503, ~7 s) with one that does not
retry: retries are the ladder's job, and a blocked batch would stall the lane.

Outcomes are per message: each goes through ``send_each_async`` on its own
(the SDK makes one HTTP request per message either way), so a message the SDK
refuses to encode, or one Herald refuses before the call (a title with a line
break, a reserved data key, a payload over FCM's 4096 bytes; see
``sinks.content``), is that delivery's Permanent result and spoils nothing else.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import firebase_admin
from firebase_admin import credentials, exceptions, messaging
from firebase_admin._http_client import HttpxAsyncClient
from firebase_admin._retry import HttpxRetry

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.base import Result, Sent, parse_retry_after
from sinks.content import check_body, check_header, check_token
from sinks.errors import DeliveryError, InvalidAddress, InvalidToken, Permanent, RateLimited, Retryable

SANDBOX_PROJECT = "herald-sandbox"
MAX_PAYLOAD_BYTES = 4096   # FCM's limit on a notification message's title, body and data
_RESERVED_DATA = ("from", "message_type")   # and any key starting with "google" or "gcm"
_RETRYABLE = (exceptions.UnavailableError, exceptions.InternalError, exceptions.DeadlineExceededError,
              exceptions.UnknownError, exceptions.AbortedError)


def sandbox_service_account(token_uri: str, project_id: str = SANDBOX_PROJECT) -> dict[str, Any]:
    """A service-account document with a freshly generated RSA key (it signs the OAuth assertion)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {
        "type": "service_account", "project_id": project_id, "private_key_id": uuid.uuid4().hex,
        "private_key": pem, "client_email": f"herald@{project_id}.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": token_uri,
    }


class FcmSink:
    provider = "fcm"
    channel = Channel.PUSH
    max_batch = 500

    def __init__(self, service_account: dict[str, Any], base_url: str, timeout: float = 15.0) -> None:
        self._app = firebase_admin.initialize_app(
            credentials.Certificate(service_account),
            {"projectId": service_account["project_id"], "httpTimeout": timeout},
            name=f"herald-{uuid.uuid4().hex}",
        )
        _point_at(self._app, base_url.rstrip("/"), timeout)

    @classmethod
    def from_file(cls, credentials_file: Path | None, base_url: str) -> FcmSink:
        """The sink for a service-account JSON file, or (None) for a generated sandbox account at ``base_url``."""
        info = json.loads(credentials_file.read_text()) if credentials_file else sandbox_service_account(base_url.rstrip("/") + "/token")
        return cls(info, base_url)

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        return list(await asyncio.gather(*(self._send_one(d) for d in deliveries)))

    async def _send_one(self, d: Delivery) -> Result:
        try:
            msg = build_message(d)
        except DeliveryError as err:
            return err
        try:
            batch = await messaging.send_each_async([msg], app=self._app)
        except exceptions.FirebaseError as exc:
            return _map(exc)
        except ValueError as exc:  # raised while encoding, before any request
            return Permanent(f"fcm: message cannot be built: {exc}")
        except OSError as exc:
            return Retryable(f"fcm: {exc}")
        except Exception as exc:  # noqa: BLE001 - this message only: the others of the batch keep their results
            return Retryable(f"fcm: unexpected error: {exc!r}")
        [r] = batch.responses
        return Sent(r.message_id) if r.success else _map(r.exception)

    async def close(self) -> None:
        # the SDK's own close runs asyncio.run(), impossible inside a loop: close our client here first
        await messaging._get_messaging_service(self._app)._async_client.aclose()  # noqa: SLF001
        await asyncio.to_thread(firebase_admin.delete_app, self._app)


def build_message(d: Delivery) -> messaging.Message:
    """The FCM message of one delivery; raises ``Permanent``/``InvalidAddress`` for a value it cannot carry."""
    check_token("device token", d.address)
    check_header("push title", d.push_title)
    check_body("text", d.text)
    data = {**(d.push_data or {}), "delivery_id": d.delivery_id}
    for key in data:
        if key in _RESERVED_DATA or key.startswith(("google", "gcm")):
            raise Permanent(f"push data key {key!r} is reserved by FCM")
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in data.items())
    size += len((d.push_title or "").encode()) + len(d.text.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise Permanent(f"push payload is {size} bytes (title, text and data), more than FCM's {MAX_PAYLOAD_BYTES}")
    return messaging.Message(
        token=d.address,
        notification=messaging.Notification(title=d.push_title, body=d.text),
        data=data,
    )


def _point_at(app: firebase_admin.App, base_url: str, timeout: float) -> None:
    service = messaging._get_messaging_service(app)  # noqa: SLF001 - no public override (see module doc)
    service._fcm_url = f"{base_url}/v1/projects/{app.project_id}/messages:send"  # noqa: SLF001
    service._async_client = HttpxAsyncClient(  # noqa: SLF001
        credential=service._credential, timeout=timeout, retry_config=HttpxRetry(max_retries=0), http2=False,  # noqa: SLF001
    )


def _map(exc: Exception | None) -> Result:
    text = f"fcm: {exc}"
    if isinstance(exc, messaging.UnregisteredError):
        return InvalidToken(text)
    if isinstance(exc, (messaging.QuotaExceededError, exceptions.ResourceExhaustedError)):
        resp = getattr(exc, "http_response", None)
        return RateLimited(text, parse_retry_after(resp.headers.get("Retry-After") if resp is not None else None))
    if isinstance(exc, exceptions.InvalidArgumentError):
        return InvalidAddress(text)
    if isinstance(exc, _RETRYABLE):
        return Retryable(text)
    if isinstance(exc, exceptions.FirebaseError):
        return Permanent(text)
    return Retryable(text)
