"""Steps 6–11 for one (event, channel): who gets it, whether they want it, and the Delivery records."""
from __future__ import annotations

from typing import Any

from schemas.records import Delivery
from schemas.vocabulary import Channel, Status
from streams.stages.route.identity import delivery_id
from streams.stages.route.intent import Intent
from streams.stages.route.recipient import Recipient, addresses, preference_blocks
from streams.stages.route.render import Rendered
from streams.templates import CompiledTemplate

Stop = tuple[Status, str]  # (status, reason)


def channel_decision(intent: Intent, channel: Channel, recipient: Recipient | None) -> Stop | list[str]:
    """A (status, reason) that ends this channel here, or the addresses to go on with."""
    if recipient is None:
        return (Status.SKIPPED, "no_recipient")
    found = addresses(recipient, channel)
    if not found:
        return (Status.SKIPPED, "no_address")
    if preference_blocks(recipient, channel, intent.category, intent.critical):
        return (Status.SUPPRESSED, "preference")
    return found


def template_context(intent: Intent, recipient: Recipient) -> dict[str, Any]:
    """The event's own fields (nested records and arrays included), or a request's variables, plus ``user``."""
    return {
        **intent.variables,
        "user": recipient.template_view(),
        "event_id": intent.event_id,
        "event_type": intent.event_type,
        "notification_id": intent.event_id,
    }


def push_data(intent: Intent) -> dict[str, str]:
    data = {"notification_id": intent.event_id, "event_type": intent.event_type, "template": intent.template}
    if intent.campaign_id:
        data["campaign_id"] = intent.campaign_id
    return data


# A Delivery's timestamps are read back as datetimes: years 1 to 9999 only
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999


def expires_at(intent: Intent) -> int:
    """Event (or send_at) time + TTL, kept in the datetime range (a request's ``ttl_seconds`` is any long)."""
    return min(max(max(intent.occurred_ms, intent.send_at_ms or 0) + intent.ttl_seconds * 1000, MIN_MS), MAX_MS)


def delivery_record(intent: Intent, channel: Channel, address: str, tmpl: CompiledTemplate, r: Rendered) -> Delivery:
    """The Delivery (schemas/avro/herald/Delivery.v2.avsc) of one channel and address, on its first attempt."""
    return Delivery(
        delivery_id=delivery_id(intent.event_id, channel, address),
        notification_id=intent.event_id,
        event_id=intent.event_id,
        event_type=intent.event_type,
        user_id=intent.user_id,
        channel=channel,
        lane=intent.lane,
        category=intent.category,
        address=address,
        template=intent.template,
        template_version=tmpl.source.version,
        locale=tmpl.source.locale,
        subject=r.subject,
        text=r.text,
        html=r.html,
        push_title=r.push_title,
        push_data=r.push_data,
        sms_segments=r.sms_segments,
        campaign_id=intent.campaign_id,
        occurred_at=intent.occurred_ms,
        expires_at=expires_at(intent),
        cancellation_key=intent.cancellation_key,
    )
