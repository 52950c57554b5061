"""Pure translation of provider webhook payloads into ``Receipt`` records (schema herald.Receipt v2).

Events that say nothing Herald tracks (SendGrid ``processed``, Twilio ``queued``,
``sent``: the sink already reported ``sent``) are skipped and counted. SendGrid's
``unsubscribe``, ``group_unsubscribe`` and ``spamreport`` become ``OptOut``s: the
webhook turns the notification's category off for its user.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.records import Receipt
from schemas.vocabulary import SENDGRID_DELIVERY_ARG, SENDGRID_NOTIFICATION_ARG, ReceiptStatus

# SendGrid event → receipt status
SENDGRID_STATUS: dict[str, ReceiptStatus] = {
    "delivered": ReceiptStatus.DELIVERED, "open": ReceiptStatus.OPENED, "click": ReceiptStatus.CLICKED,
    "bounce": ReceiptStatus.BOUNCED, "dropped": ReceiptStatus.FAILED,
}
# a dropped message whose reason says the address itself is bad counts as a hard bounce
SENDGRID_HARD_DROP = ("bounced address", "invalid")
# Twilio MessageStatus → receipt status
TWILIO_STATUS: dict[str, ReceiptStatus] = {
    "delivered": ReceiptStatus.DELIVERED, "read": ReceiptStatus.OPENED,
    "undelivered": ReceiptStatus.BOUNCED, "failed": ReceiptStatus.BOUNCED,
}
# Twilio error codes that mean the number itself cannot receive SMS
TWILIO_HARD_CODES = frozenset({"21211", "21612", "21614", "30005", "30006"})
DELIVERY_ID_ARG = SENDGRID_DELIVERY_ARG  # the SendGrid custom_args key the email sink sets per personalization
NOTIFICATION_ID_ARG = SENDGRID_NOTIFICATION_ARG
# SendGrid events that mean "no more of this": the notification's category is turned off for its user
SENDGRID_OPT_OUT = frozenset({"unsubscribe", "group_unsubscribe", "spamreport"})


@dataclass(frozen=True, slots=True)
class OptOut:
    """A recipient asked for no more of this kind of email; which notification (or delivery) it was about."""

    event: str
    notification_id: str | None
    delivery_id: str | None


@dataclass
class Translation:
    receipts: list[Receipt] = field(default_factory=list)
    opt_outs: list[OptOut] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # why → count

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


class PayloadError(ValueError):
    """The payload is not what the provider sends (a 400 with this message)."""


def sendgrid_message_id(sg_message_id: str) -> str:
    """``sg_message_id`` is the ``X-Message-Id`` the send call returned plus ``.filter...`` routing suffixes."""
    return sg_message_id.split(".", 1)[0]


def from_sendgrid(events: Any, now_ms: int) -> Translation:
    if not isinstance(events, list):
        raise PayloadError("a SendGrid event webhook body is a JSON array of events")
    out = Translation()
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise PayloadError(f"event {i} is not a JSON object")
        kind = ev.get("event")
        if kind in SENDGRID_OPT_OUT:
            nid, did = ev.get(NOTIFICATION_ID_ARG), ev.get(DELIVERY_ID_ARG)
            nid, did = (nid[:400] if isinstance(nid, str) and nid else None), (did[:200] if isinstance(did, str) and did else None)
            if nid is None and did is None:
                out.skip(f"sendgrid:{kind}:no_herald_id")   # not an email Herald sent (or custom_args stripped)
            else:
                out.opt_outs.append(OptOut(str(kind), nid, did))
            continue
        status = SENDGRID_STATUS.get(kind) if isinstance(kind, str) else None
        if status is None:
            out.skip(f"sendgrid:{kind}" if isinstance(kind, str) else "sendgrid:no_event")
            continue
        msg_id = ev.get("sg_message_id")
        if not isinstance(msg_id, str) or not msg_id.strip("."):
            out.skip("sendgrid:no_message_id")
            continue
        reason = ev.get("reason") or ev.get("response") or ev.get("type")
        reason = str(reason)[:500] if reason is not None else None
        hard = False
        if kind == "bounce":
            hard = ev.get("type", "bounce") != "blocked"  # "blocked" is SendGrid's soft bounce
        elif kind == "dropped":
            hard = any(s in (reason or "").lower() for s in SENDGRID_HARD_DROP)
            if hard:
                status = ReceiptStatus.BOUNCED
        ts = ev.get("timestamp")
        at = int(ts * 1000) if isinstance(ts, (int, float)) and not isinstance(ts, bool) and 0 < ts < 1e11 else now_ms
        email = ev.get("email")
        delivery_id = ev.get(DELIVERY_ID_ARG)
        out.receipts.append(Receipt(
            provider="sendgrid",
            provider_message_id=sendgrid_message_id(msg_id),
            status=status,
            hard_bounce=hard,
            reason=reason,
            at=at,
            address=email[:320] if isinstance(email, str) else None,
            delivery_id=delivery_id[:200] if isinstance(delivery_id, str) else None,
        ))
    return out


def from_twilio(form: dict[str, str], now_ms: int) -> Translation:
    """One status callback (form fields ``MessageSid``, ``MessageStatus``, ``ErrorCode``, ``To``)."""
    out = Translation()
    sid = form.get("MessageSid") or form.get("SmsSid")
    kind = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not kind:
        raise PayloadError("a Twilio status callback carries MessageSid and MessageStatus")
    status = TWILIO_STATUS.get(kind)
    if status is None:
        out.skip(f"twilio:{kind[:40]}")
        return out
    code = form.get("ErrorCode") or None
    bounced = status == ReceiptStatus.BOUNCED
    reason = f"{kind}: error {code}" if code else (kind if bounced else None)
    out.receipts.append(Receipt(
        provider="twilio",
        provider_message_id=sid[:200],
        status=status,
        hard_bounce=bounced and code in TWILIO_HARD_CODES,
        reason=reason,
        at=now_ms,
        address=form.get("To") or None,
        delivery_id=None,
    ))
    return out
