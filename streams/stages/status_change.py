"""Building StatusChange records: every stage reports what happened to a notification."""
from __future__ import annotations

from typing import Any

from schemas.codec import Codec
from infra.kafka.records import TRACE, OutRecord, now_ms

# A notification's status never moves backwards: a change with a higher rank
# wins, a lower or equal one is kept in the history only. Suppressions and
# failures rank below "sent" so that a notification sent on one channel and
# suppressed on another reads "sent", and a failure replayed later can move on.
RANK: dict[str, int] = {
    "queued": 10,
    "scheduled": 20,
    "deferred": 20,
    "suppressed": 30,
    "skipped": 30,
    "rate_limited": 30,
    "expired": 30,
    "failed": 40,
    "dead_lettered": 40,
    "sent": 50,
    "delivered": 60,
    "bounced": 65,
    "opened": 70,
    "clicked": 80,
}


def status_record(
    codec: Codec,
    topic: str,
    *,
    notification_id: str,
    event_id: str,
    user_id: str,
    status: str,
    event_type: str = "",
    channel: str | None = None,
    reason: str | None = None,
    delivery_id: str | None = None,
    provider_message_id: str | None = None,
    template: str | None = None,
    category: str | None = None,
    campaign_id: str | None = None,
    trace_id: str | None = None,
    at_ms: int | None = None,
) -> OutRecord:
    record: dict[str, Any] = {
        "notification_id": notification_id,
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user_id,
        "status": status,
        "channel": channel,
        "reason": reason,
        "delivery_id": delivery_id,
        "provider_message_id": provider_message_id,
        "template": template,
        "category": category,
        "campaign_id": campaign_id,
        "at": at_ms if at_ms is not None else now_ms(),
    }
    headers = [(TRACE, trace_id.encode())] if trace_id else []
    return OutRecord(topic, notification_id.encode(), codec.encode("StatusChange", record), headers)
