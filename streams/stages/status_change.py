"""Building StatusChange records: every stage reports what happened to a notification."""
from __future__ import annotations

from dataclasses import replace

from infra.kafka.records import TRACE, OutRecord, now_ms
from schemas.codec import Codec
from schemas.records import StatusChange
from schemas.vocabulary import RANK, Channel, Status

__all__ = ["RANK", "encode_status", "status_record"]  # RANK re-exported for callers that read it from here


def encode_status(codec: Codec, topic: str, change: StatusChange, trace_id: str | None = None) -> OutRecord:
    """The status topic's record of ``change``, keyed by its notification (one partition keeps its order).

    ``trace_id`` travels in the header, and in the record (where the notification row keeps it) unless the
    change already names one."""
    headers = [(TRACE, trace_id.encode())] if trace_id else []
    if trace_id and change.trace_id is None:
        change = replace(change, trace_id=trace_id)
    return OutRecord(topic, change.notification_id.encode(), codec.encode("StatusChange", change.to_avro()), headers)


def status_record(
    codec: Codec,
    topic: str,
    *,
    notification_id: str,
    event_id: str,
    user_id: str,
    status: Status | str,
    event_type: str = "",
    channel: Channel | str | None = None,
    reason: str | None = None,
    delivery_id: str | None = None,
    provider_message_id: str | None = None,
    template: str | None = None,
    category: str | None = None,
    campaign_id: str | None = None,
    trace_id: str | None = None,
    at_ms: int | None = None,
) -> OutRecord:
    """Keyword form of ``encode_status``; a status or channel given as its plain string is coerced (ValueError if unknown)."""
    change = StatusChange(
        notification_id=notification_id,
        event_id=event_id,
        user_id=user_id,
        status=status if isinstance(status, Status) else Status(status),
        at=at_ms if at_ms is not None else now_ms(),
        event_type=event_type,
        channel=channel if channel is None or isinstance(channel, Channel) else Channel(channel),
        reason=reason,
        delivery_id=delivery_id,
        provider_message_id=provider_message_id,
        template=template,
        category=category,
        campaign_id=campaign_id,
        trace_id=trace_id,
    )
    return encode_status(codec, topic, change, trace_id)
