"""FCM sink: the real ``firebase-admin`` SDK (``send_each_async``, up to 500 messages a call).

Pointing it at the sandbox: the service-account JSON is public configuration
(its ``token_uri`` names the OAuth endpoint; without a file we generate one
with a fresh RSA key). The send URL has no public override in firebase-admin
7.x, so ``_point_at`` sets the private attributes of the messaging service —
the only place in Herald that touches them. It also replaces the SDK's own
retrying HTTP client (4 retries on 500/503, ~7 s) with one that does not
retry: retries are the ladder's job, and a blocked batch would stall the lane.
"""
from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import firebase_admin
from firebase_admin import credentials, exceptions, messaging
from firebase_admin._http_client import HttpxAsyncClient
from firebase_admin._retry import HttpxRetry

from infra.settings import Settings
from sinks.base import Delivery, Result, Sent, parse_retry_after
from sinks.errors import InvalidAddress, InvalidToken, Permanent, RateLimited, Retryable

SANDBOX_PROJECT = "herald-sandbox"
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
    channel = "push"
    max_batch = 500

    def __init__(self, service_account: dict[str, Any], base_url: str, timeout: float = 15.0) -> None:
        self._app = firebase_admin.initialize_app(
            credentials.Certificate(service_account),
            {"projectId": service_account["project_id"], "httpTimeout": timeout},
            name=f"herald-{uuid.uuid4().hex}",
        )
        _point_at(self._app, base_url.rstrip("/"), timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> FcmSink:
        if settings.fcm_credentials_file:
            info = json.loads(settings.fcm_credentials_file.read_text())
        else:
            info = sandbox_service_account(settings.fcm_url.rstrip("/") + "/token")
        return cls(info, settings.fcm_url)

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        if not deliveries:
            return []
        msgs = [
            messaging.Message(
                token=d["address"],
                notification=messaging.Notification(title=d.get("push_title"), body=d["text"]),
                data={**(d.get("push_data") or {}), "delivery_id": d["delivery_id"]},
            )
            for d in deliveries
        ]
        try:
            batch = await messaging.send_each_async(msgs, app=self._app)
        except exceptions.FirebaseError as exc:
            return [_map(exc)] * len(deliveries)
        except (OSError, ValueError) as exc:
            return [Retryable(f"fcm: {exc}")] * len(deliveries)
        return [Sent(r.message_id) if r.success else _map(r.exception) for r in batch.responses]

    async def close(self) -> None:
        # the SDK's own close runs asyncio.run(), impossible inside a loop: close our client here first
        await messaging._get_messaging_service(self._app)._async_client.aclose()  # noqa: SLF001
        await asyncio.to_thread(firebase_admin.delete_app, self._app)


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
