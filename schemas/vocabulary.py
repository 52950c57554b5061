"""Herald's words: channels, lanes, statuses. One declaration each; everything else derives from them.

``StrEnum`` members compare equal to their strings (``Status.SENT == "sent"``), so records, SQL and
JSON carry the plain values. Adding a channel is a member here plus its sink; the Avro enums and
the SQL checks are kept in step by tests (tests/unit/test_vocabulary.py).
"""
from __future__ import annotations

from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


CHANNELS: tuple[Channel, ...] = tuple(Channel)


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class Status(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    DEFERRED = "deferred"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    RETRYING = "retrying"   # an attempt failed; the delivery waits in a retry tier (the reason says which, and why)
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"
    CANCELED = "canceled"   # its campaign was canceled before it was sent (never delivered afterwards)
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    OPENED = "opened"
    CLICKED = "clicked"


# A notification's status never moves backwards: a change with a higher rank wins, a lower or equal
# one is kept in the history only. Suppressions and failures rank below "sent" so that a notification
# sent on one channel and suppressed on another reads "sent", and a failure replayed later can move on.
RANK: dict[Status, int] = {
    Status.QUEUED: 10,
    Status.SCHEDULED: 20,
    Status.DEFERRED: 20,
    Status.SUPPRESSED: 30,
    Status.SKIPPED: 30,
    Status.RATE_LIMITED: 30,
    Status.EXPIRED: 30,
    Status.RETRYING: 35,
    Status.FAILED: 40,
    Status.DEAD_LETTERED: 40,
    Status.CANCELED: 45,   # over every waiting status (a retry, a schedule), under "sent": a sent one stays sent
    Status.SENT: 50,
    Status.DELIVERED: 60,
    Status.BOUNCED: 65,
    Status.OPENED: 70,
    Status.CLICKED: 80,
}


class ReceiptStatus(StrEnum):
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    BOUNCED = "bounced"
    FAILED = "failed"


class LedgerStatus(StrEnum):
    """A delivery's row in the ledger (``deliveries.status``)."""

    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"


# SendGrid custom_args keys the email sink sets per personalization and the event webhook reads back: one
# declaration, so a receipt finds its delivery even when one send holds two emails to the same address
SENDGRID_DELIVERY_ARG = "herald_delivery_id"
SENDGRID_NOTIFICATION_ARG = "herald_notification_id"
