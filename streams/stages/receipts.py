"""Pure receipts stage: provider receipts + the deliveries they name → status changes and undeliverable addresses.

A provider message id can name several deliveries (SendGrid sends up to 1000
personalizations in one request, all under one ``X-Message-Id``), so a receipt
is matched by Herald's delivery id when the provider echoed it, else by the
only delivery under that id, else by the recipient address.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from schemas.records import Receipt, StatusChange, epoch_ms
from schemas.vocabulary import Channel, ReceiptStatus, Status

STATUS: dict[ReceiptStatus, Status] = {
    ReceiptStatus.DELIVERED: Status.DELIVERED,
    ReceiptStatus.OPENED: Status.OPENED,
    ReceiptStatus.CLICKED: Status.CLICKED,
    ReceiptStatus.BOUNCED: Status.BOUNCED,
    ReceiptStatus.FAILED: Status.FAILED,
}
# a push token that fails is deactivated by the push sink instead
UNDELIVERABLE_CHANNELS: tuple[Channel, ...] = (Channel.EMAIL, Channel.SMS)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    notification_id: str
    channel: Channel
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
    status: Status
    channel: Channel
    reason: str | None
    delivery_id: str
    provider_message_id: str
    at_ms: int

    def to_status_change(self) -> StatusChange:
        return StatusChange(
            notification_id=self.notification_id, event_id=self.event_id, user_id=self.user_id, status=self.status,
            at=self.at_ms, event_type=self.event_type, channel=self.channel, reason=self.reason,
            delivery_id=self.delivery_id, provider_message_id=self.provider_message_id,
        )


@dataclass(frozen=True, slots=True)
class Unmatched:
    index: int         # position of the receipt in the batch
    error_class: str   # the DLQ reason an SRE filters on
    error: str


@dataclass
class Plan:
    changes: list[tuple[int, Change]] = field(default_factory=list)  # (receipt index, change)
    undeliverable: dict[Channel, set[str]] = field(default_factory=lambda: {c: set() for c in UNDELIVERABLE_CHANNELS})
    unmatched: list[Unmatched] = field(default_factory=list)


def normal_address(channel: Channel, address: str) -> str:
    """Email addresses compare case-insensitively, phone numbers exactly."""
    return address.lower() if channel == Channel.EMAIL else address


def match(receipt: Receipt, rows: list[DeliveryRow]) -> DeliveryRow | Unmatched:
    pmid = receipt.provider_message_id
    if not rows:
        return Unmatched(-1, "unknown_provider_message", f"no delivery with {receipt.provider} message id {pmid}")
    if receipt.delivery_id:
        for row in rows:
            if row.delivery_id == receipt.delivery_id:
                return row
        return Unmatched(-1, "unknown_provider_message", f"delivery {receipt.delivery_id} is not under message id {pmid}")
    if len(rows) == 1:
        return rows[0]
    if receipt.address:
        hits = [row for row in rows
                if normal_address(row.channel, row.address) == normal_address(row.channel, receipt.address)]
        if len(hits) == 1:
            return hits[0]
    return Unmatched(-1, "ambiguous_provider_message",
                     f"{len(rows)} deliveries share message id {pmid} and the receipt's address does not pick one")


def reason_of(receipt: Receipt) -> str | None:
    if receipt.status == ReceiptStatus.BOUNCED:
        kind = "hard bounce" if receipt.hard_bounce else "soft bounce"
        return f"{kind}: {receipt.reason}" if receipt.reason else kind
    return receipt.reason


def plan(receipts: list[Receipt], deliveries: dict[str, list[DeliveryRow]]) -> Plan:
    """``deliveries`` maps provider message id → the ledger rows carrying it."""
    out = Plan()
    for index, receipt in enumerate(receipts):
        found = match(receipt, deliveries.get(receipt.provider_message_id, []))
        if isinstance(found, Unmatched):
            out.unmatched.append(Unmatched(index, found.error_class, found.error))
            continue
        if found.user_id is None:
            out.unmatched.append(Unmatched(index, "notification_not_found",
                                           f"notification {found.notification_id} of delivery {found.delivery_id} has no status row yet"))
            continue
        out.changes.append((index, Change(
            notification_id=found.notification_id,
            event_id=found.event_id or found.notification_id,
            event_type=found.event_type or "",
            user_id=found.user_id,
            status=STATUS[receipt.status],
            channel=found.channel,
            reason=reason_of(receipt),
            delivery_id=found.delivery_id,
            provider_message_id=found.provider_message_id,
            at_ms=epoch_ms(receipt.at),
        )))
        if receipt.status == ReceiptStatus.BOUNCED and receipt.hard_bounce and found.channel in UNDELIVERABLE_CHANNELS:
            out.undeliverable[found.channel].add(normal_address(found.channel, found.address))
    return out
