"""Pure receipts stage: provider receipts + the deliveries they name → status changes and undeliverable addresses.

A provider message id can name several deliveries (SendGrid sends up to 1000
personalizations in one request, all under one ``X-Message-Id``), so a receipt
is matched by Herald's delivery id when the provider echoed it, else by the
only delivery under that id, else by the recipient address.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUS = {"delivered": "delivered", "opened": "opened", "clicked": "clicked", "bounced": "bounced", "failed": "failed"}
UNDELIVERABLE_CHANNELS = ("email", "sms")  # a push token that fails is deactivated by the push sink instead


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    notification_id: str
    channel: str
    address: str
    provider_message_id: str
    user_id: str | None      # None when the notification row is not written yet
    event_id: str | None
    event_type: str | None


@dataclass(frozen=True, slots=True)
class Change:
    notification_id: str
    event_id: str
    event_type: str
    user_id: str
    status: str
    channel: str
    reason: str | None
    delivery_id: str
    provider_message_id: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Unmatched:
    index: int         # position of the receipt in the batch
    error_class: str   # the DLQ reason an SRE filters on
    error: str


@dataclass
class Plan:
    changes: list[tuple[int, Change]] = field(default_factory=list)  # (receipt index, change)
    undeliverable: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in UNDELIVERABLE_CHANNELS})
    unmatched: list[Unmatched] = field(default_factory=list)


def _same_address(channel: str, a: str, b: str) -> bool:
    return a.lower() == b.lower() if channel == "email" else a == b


def match(receipt: dict[str, Any], rows: list[DeliveryRow]) -> DeliveryRow | Unmatched:
    pmid = receipt["provider_message_id"]
    if not rows:
        return Unmatched(-1, "unknown_provider_message", f"no delivery with {receipt['provider']} message id {pmid}")
    if receipt.get("delivery_id"):
        for r in rows:
            if r.delivery_id == receipt["delivery_id"]:
                return r
        return Unmatched(-1, "unknown_provider_message", f"delivery {receipt['delivery_id']} is not under message id {pmid}")
    if len(rows) == 1:
        return rows[0]
    address = receipt.get("address")
    if address:
        hits = [r for r in rows if _same_address(r.channel, r.address, address)]
        if len(hits) == 1:
            return hits[0]
    return Unmatched(-1, "ambiguous_provider_message",
                     f"{len(rows)} deliveries share message id {pmid} and the receipt's address does not pick one")


def reason_of(receipt: dict[str, Any]) -> str | None:
    why = receipt.get("reason")
    if receipt["status"] == "bounced":
        kind = "hard bounce" if receipt.get("hard_bounce") else "soft bounce"
        return f"{kind}: {why}" if why else kind
    return why


def plan(receipts: list[dict[str, Any]], deliveries: dict[str, list[DeliveryRow]]) -> Plan:
    """``deliveries`` maps provider message id → the ledger rows carrying it."""
    out = Plan()
    for i, rc in enumerate(receipts):
        found = match(rc, deliveries.get(rc["provider_message_id"], []))
        if isinstance(found, Unmatched):
            out.unmatched.append(Unmatched(i, found.error_class, found.error))
            continue
        if found.user_id is None:
            out.unmatched.append(Unmatched(i, "notification_not_found",
                                           f"notification {found.notification_id} of delivery {found.delivery_id} has no status row yet"))
            continue
        out.changes.append((i, Change(
            notification_id=found.notification_id,
            event_id=found.event_id or found.notification_id,
            event_type=found.event_type or "",
            user_id=found.user_id,
            status=STATUS[rc["status"]],
            channel=found.channel,
            reason=reason_of(rc),
            delivery_id=found.delivery_id,
            provider_message_id=found.provider_message_id,
            at_ms=rc["at"] if isinstance(rc["at"], int) else int(rc["at"].timestamp() * 1000),
        )))
        if rc["status"] == "bounced" and rc.get("hard_bounce") and found.channel in UNDELIVERABLE_CHANNELS:
            address = found.address.lower() if found.channel == "email" else found.address
            out.undeliverable[found.channel].add(address)
    return out
