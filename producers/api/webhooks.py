"""Provider webhooks → ``Receipt`` records on the receipts topic, keyed by provider message id.

Signatures are checked on the raw bytes before anything is parsed: SendGrid's
signed event webhook (ECDSA P-256 over timestamp + payload, verified with the
SDK's ``EventWebhook``) and Twilio's ``X-Twilio-Signature`` (HMAC over the URL
and the form, verified with the SDK's ``RequestValidator``).
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import APIRouter, Header, HTTPException, Request
from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

from infra.kafka.producer import ProduceError
from infra.kafka.records import OutRecord, now_ms
from infra.settings import Settings
from producers.api.auth import Resources
from producers.api.errors import field_name
from producers.api.hostile import find_problem
from producers.api.provider_events import OptOut, PayloadError, Translation, from_sendgrid, from_twilio
from producers.api.resources import ApiResources
from producers.api.unsubscribe import opt_out

router = APIRouter(tags=["webhooks"])

SENDGRID_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "array", "items": {"type": "object", "properties": {
            "email": {"type": "string"}, "timestamp": {"type": "integer"}, "event": {"type": "string"},
            "sg_message_id": {"type": "string"}, "reason": {"type": "string"}, "type": {"type": "string"},
        }},
    }}}},
}
TWILIO_BODY = {
    "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": {
            "MessageSid": {"type": "string"}, "MessageStatus": {"type": "string"}, "ErrorCode": {"type": "string"},
            "To": {"type": "string"}, "AccountSid": {"type": "string"},
        },
    }}}},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong signature, or (SendGrid) a timestamp outside HERALD_API__SENDGRID_WEBHOOK_MAX_AGE"},
    400: {"description": "signed but not a provider payload"},
    413: {"description": "body too large"},
    503: {"description": "webhook not configured, or Kafka did not take the receipts (the provider retries)"},
}


def load_sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER) or as a PEM block."""
    key = load_pem_public_key(text.encode()) if "BEGIN PUBLIC KEY" in text else EventWebhook(text.strip()).public_key
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid webhook key is not an elliptic-curve public key")
    return key


def sendgrid_timestamp_problem(timestamp: str, now: float, max_age: float) -> str | None:
    """Why a signed timestamp (Unix seconds) is refused: too old (a replayed capture) or too far ahead; None when fresh."""
    try:
        at = int(timestamp.strip())
    except ValueError:
        return "X-Twilio-Email-Event-Webhook-Timestamp is not a Unix time in seconds"
    age = now - at
    if age > max_age:
        return (f"the signed timestamp is {age:.0f}s old, older than HERALD_API__SENDGRID_WEBHOOK_MAX_AGE ({max_age:g}s): "
                "refused as a replay")
    if -age > max_age:
        return f"the signed timestamp is {-age:.0f}s in the future (more than {max_age:g}s): check the clocks"
    return None


def sendgrid_signature_ok(key: ec.EllipticCurvePublicKey, payload: bytes, signature: str, timestamp: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False


async def _produce(res: ApiResources, provider: str, t: Translation) -> dict[str, Any]:
    topic = res.settings.topic("receipts")
    records = [OutRecord(topic, receipt.provider_message_id.encode(), res.codec.encode("Receipt", receipt.to_avro()))
               for receipt in t.receipts]
    try:
        await res.producer.send(records)
    except ProduceError as exc:
        raise HTTPException(503, f"receipts not stored ({exc}); the provider will retry", headers={"Retry-After": "5"}) from exc
    for receipt in t.receipts:
        res.metrics.receipts.labels(provider, receipt.status).inc()
    for why, n in t.skipped.items():
        res.metrics.webhook_skipped.labels(why).inc(n)
    return {"accepted": len(t.receipts), "skipped": sum(t.skipped.values())}


@router.post("/v1/webhooks/sendgrid", openapi_extra=SENDGRID_BODY, responses=RESPONSES)
async def sendgrid_events(
    request: Request,
    res: Resources,
    x_twilio_email_event_webhook_signature: Annotated[str | None, Header()] = None,
    x_twilio_email_event_webhook_timestamp: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """SendGrid's signed event webhook: delivered, open, click, bounce and dropped events become receipts;
    unsubscribe, group_unsubscribe and spamreport turn the notification's category off for its user."""
    key = request.app.state.sendgrid_key
    if key is None:
        raise HTTPException(503, "SendGrid webhook not configured: set HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY")
    payload = await request.body()
    sig, ts = x_twilio_email_event_webhook_signature, x_twilio_email_event_webhook_timestamp
    if not sig or not ts or not sendgrid_signature_ok(key, payload, sig, ts):
        res.metrics.rejected.labels("bad_signature").inc()
        raise HTTPException(401, "bad or missing X-Twilio-Email-Event-Webhook-Signature / -Timestamp")
    # the signature covers the timestamp: a captured request replayed later carries its old one
    if problem := sendgrid_timestamp_problem(ts, time.time(), res.config.sendgrid_webhook_max_age):
        res.metrics.rejected.labels("stale_webhook").inc()
        raise HTTPException(401, problem)
    try:
        events = json.loads(payload)
        _refuse_unstorable(events)
        translation = from_sendgrid(events, now_ms())
    except (ValueError, PayloadError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise HTTPException(400, f"not a SendGrid event batch: {exc}") from exc
    unsubscribed = await _opt_out(res, translation.opt_outs)   # before the receipts: SendGrid retries a 503 whole
    return {**await _produce(res, "sendgrid", translation), "unsubscribed": unsubscribed}


# per row: the notification (when its row is written), and for an event that named its delivery, that ledger row's
OPTED_OUT_SQL = """
SELECT n.id, NULL, n.user_id, n.category FROM notifications n WHERE n.id = ANY(%s::text[])
UNION ALL
SELECT d.notification_id, d.delivery_id, n.user_id, n.category FROM deliveries d LEFT JOIN notifications n ON n.id = d.notification_id
WHERE d.delivery_id = ANY(%s::text[])
"""
OPT_OUT_RETRY_SECONDS = 30


async def _opt_out(res: ApiResources, opt_outs: list[OptOut]) -> int:
    """The (user, category) of each event's notification turned off; critical categories (security) are never.

    An event about a delivery the ledger holds whose notification row is not written yet (the email was sent moments
    ago) is answered 503 after the others are applied: SendGrid sends the batch again, and a repeat is harmless."""
    if not opt_outs:
        return 0
    async with res.db.connection() as conn:
        rows = await (await conn.execute(OPTED_OUT_SQL, ([o.notification_id for o in opt_outs if o.notification_id],
                                                         [o.delivery_id for o in opt_outs if o.delivery_id]))).fetchall()
    written = {nid for nid, _, user, _ in rows if user is not None}
    pairs = {(user, category) for _, _, user, category in rows
             if user is not None and category is not None and category not in res.critical_categories}
    done = len(await opt_out(res, pairs, "sendgrid"))
    unwritten = {did for nid, did, user, _ in rows if did is not None and user is None and nid not in written}
    if waiting := [o for o in opt_outs if o.delivery_id in unwritten and o.notification_id not in written]:
        raise HTTPException(503, f"{len(waiting)} opt-out(s) for emails sent moments ago whose notification is not "
                                 f"recorded yet (delivery {waiting[0].delivery_id}); SendGrid will send them again",
                            headers={"Retry-After": str(OPT_OUT_RETRY_SECONDS)})
    return done


def _refuse_unstorable(payload: Any) -> None:
    """A signed payload can still carry a NUL or a lone surrogate: neither fits a Kafka key, an Avro string or PostgreSQL."""
    if found := find_problem(payload):
        where, problem = found
        raise ValueError(f"{field_name(where) if where else 'the payload'} {problem}")


def _public_url(request: Request, public_base: str | None) -> str:
    if not public_base:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return public_base.rstrip("/") + request.url.path + query


def _twilio_token(settings: Settings, account_sid: str | None) -> str:
    """The auth token that signs an account's callbacks: the second account's for its SID, else the first's."""
    second = settings.sms_failover
    if second.enabled and account_sid == second.account_sid and second.auth_token is not None:
        return second.auth_token.get_secret_value()
    return settings.twilio_auth_token.get_secret_value()


@router.post("/v1/webhooks/twilio", openapi_extra=TWILIO_BODY, responses=RESPONSES)
async def twilio_status(
    request: Request,
    res: Resources,
    x_twilio_signature: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Twilio's message status callback (form-encoded, ``X-Twilio-Signature``): delivered, undelivered, failed, read."""
    body = await request.body()
    try:
        form = ImmutableMultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as exc:
        form = None
        bad = exc
    validator = RequestValidator(_twilio_token(res.settings, form.get("AccountSid") if form is not None else None))
    url = _public_url(request, res.config.public_url)
    if not x_twilio_signature or form is None or not validator.validate(url, form, x_twilio_signature):
        res.metrics.rejected.labels("bad_signature").inc()
        detail = "bad or missing X-Twilio-Signature"
        if form is None:
            detail += f" (body is not a form: {bad})"
        raise HTTPException(401, detail)
    try:
        fields = {k: form[k] for k in form}
        _refuse_unstorable(fields)
        translation = from_twilio(fields, now_ms())
    except (PayloadError, ValueError) as exc:
        raise HTTPException(400, str(exc)) from exc
    return await _produce(res, "twilio", translation)
